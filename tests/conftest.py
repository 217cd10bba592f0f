from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_models import build_tiny_model  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GGUF conversions go to a per-run cache, so every run exercises the conversion."""
    cache = tmp_path_factory.mktemp("slerp-arena-cache")
    os.environ["SLERP_ARENA_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory):
    """tiny_models(arch, seed, **kwargs) -> folder; built once per distinct request."""
    root = tmp_path_factory.mktemp("tiny-models")
    built: dict[tuple, Path] = {}

    def get(arch: str, seed: int, **kwargs) -> Path:
        key = (arch, seed, tuple(sorted(kwargs.items())))
        if key not in built:
            name = f"{arch}-{seed}-" + "-".join(f"{k}{v}" for k, v in sorted(kwargs.items()))
            built[key] = build_tiny_model(root / name, arch, seed, **kwargs)
        return built[key]

    return get


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The bundled SmolLM2 GGUF converted to safetensors (once per run)."""
    from core.sources import resolve_model

    return resolve_model("bundled:SmolLM2-135M-Instruct")


@pytest.fixture(scope="session")
def demo_parent(smollm2_dir: Path) -> tuple[Path, list[tuple[str, int, int]], float]:
    """The real demo parent, built once per run (about 2.5 min on 2 cores): its folder,
    the progress reports, and the build's seconds."""
    import time

    from inference.demo_parent import build_demo_parent

    stages: list[tuple[str, int, int]] = []
    started = time.perf_counter()
    folder = build_demo_parent(on_progress=lambda stage, done, total: stages.append((stage, done, total)))
    return folder, stages, time.perf_counter() - started


@pytest.fixture
def isolated_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The app module with its own outputs folder, votes database and model cache."""
    import app
    from inference import ModelCache
    from ui import context

    monkeypatch.setenv("SLERP_ARENA_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("SLERP_ARENA_VOTES", str(tmp_path / "votes.sqlite"))
    monkeypatch.setattr(context, "MODELS", ModelCache())
    return app


@pytest.fixture
def served_app(isolated_app):
    """The isolated app, launched on a free local port; yields its URL."""
    demo = isolated_app.build_app().queue(default_concurrency_limit=1)
    _, url, _ = demo.launch(prevent_thread_lock=True, show_error=True, quiet=True)
    yield url
    demo.close()


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
ARTIFACTS = ROOT / "artifacts"  # screenshots (ignored by git)


@pytest.fixture
def browser_page(served_app):
    """A Debian Chromium page (Playwright, no browser download) on the served app,
    1400x900 like a laptop; screenshots go to ARTIFACTS."""
    import shutil

    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium", args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(served_app)
        yield page
        browser.close()
