"""Fixtures shared by the tests. Things built once per machine (the converted GGUF, the C
kernels, the demo parent) live in a test cache keyed by their inputs, so a second run reuses
them; tests/test_builds.py builds each from scratch in a fresh cache (in a background
process started at collection, testkit/fresh_build.py), and publishes what it built here,
so a fresh machine builds each once."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from core.native import kernels_off, supported_targets
from core.places import ROOT
from testkit.browser import launch_chromium
from testkit.fresh_build import BackgroundBuild, BuildResult
from testkit.tiny_models import build_tiny_model

ARTIFACTS = ROOT / "artifacts"  # screenshots (ignored by git)
pytest_plugins = ["testkit.suite_limits"]  # the machine in the summary, a disk check, a deadline for the whole run
MACHINE_CACHE = Path(os.environ.get("SLERP_ARENA_TEST_CACHE", Path.home() / ".cache" / "slerp-arena-tests"))
FRESH_BUILD = pytest.StashKey[BackgroundBuild]()


EXPECT_TIMEOUT_MS = 15_000


def pytest_configure(config: pytest.Config) -> None:
    from playwright.sync_api import expect

    os.environ["SLERP_ARENA_CACHE"] = str(MACHINE_CACHE)
    # What a page shows is waited for this long, not Playwright's 5 s: in CI the browser tests
    # share the 2 cores with the fresh build, and a second visitor's page took longer to load.
    expect.set_options(timeout=EXPECT_TIMEOUT_MS)


# A test that uses one of these fixtures gets the marker: `make test-fast` skips both kinds.
MARKED_BY_FIXTURE = {"browser_page": "browser", "demo_parent": "slow", "fresh_builds": "slow"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, marker in MARKED_BY_FIXTURE.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)
    # The tests that wait for the background build (a fresh machine's demo parent) go last.
    items.sort(key=lambda item: bool({"demo_parent", "fresh_builds"} & set(getattr(item, "fixturenames", ()))))


class _KernelEverywhere:
    """cpu_kernels' choices, as if the kernel had measured faster for every shape."""

    def get(self, key: tuple, default: object = None) -> bool:
        return True


TARGETS = [] if kernels_off() else supported_targets()


def use_kernels(target: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both engines' libraries built for `target` and used wherever they apply; "torch": none."""
    from inference import cpu_kernels
    from merging import slerp_kernel

    libraries = (False, False) if target == "torch" else (cpu_kernels.build_library(target), slerp_kernel.build_library(target))
    assert all(lib is not None for lib in libraries), f"the {target} kernels did not build"
    monkeypatch.setattr(cpu_kernels, "_kernel", libraries[0])
    monkeypatch.setattr(cpu_kernels, "_choices", _KernelEverywhere())
    monkeypatch.setattr(slerp_kernel, "_lib", libraries[1])


@pytest.fixture(params=TARGETS)
def kernel_target(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each instruction-set target this CPU runs ("avx2", built without AVX-512, and
    "avx512" where the CPU has it), in place of the engines' own choice; none with
    SLERP_ARENA_KERNELS=torch."""
    use_kernels(request.param, monkeypatch)
    return request.param


@pytest.fixture(params=[*TARGETS, "torch"])
def math_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """kernel_target's targets, then torch's path with no C kernel."""
    use_kernels(request.param, monkeypatch)
    return request.param


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
    """The bundled SmolLM2 GGUF converted to safetensors (cached per machine)."""
    from core.sources import resolve_model

    return resolve_model("bundled:SmolLM2-135M-Instruct")


def needs_fresh_build(items: list[pytest.Item]) -> bool:
    """A selected test builds from scratch, or needs the demo parent this machine lacks."""
    names = {name for item in items for name in getattr(item, "fixturenames", ())}
    if "fresh_builds" in names:
        return True
    if "demo_parent" not in names:
        return False
    from evaluation.demo_parent import built_demo_parent

    return built_demo_parent() is None


def start_fresh_build(config: pytest.Config) -> BackgroundBuild:
    build = config.stash[FRESH_BUILD] = BackgroundBuild(Path(tempfile.mkdtemp(prefix="slerp-arena-fresh-")))
    return build


def pytest_collection_finish(session: pytest.Session) -> None:
    """The fresh build starts now, in a process of its own (testkit/fresh_build.py), and
    the tests that do not need it run meanwhile."""
    if not session.config.option.collectonly and needs_fresh_build(session.items):
        start_fresh_build(session.config)


def pytest_unconfigure(config: pytest.Config) -> None:
    if (build := config.stash.get(FRESH_BUILD, None)) is not None:
        build.stop()  # a run stopped early (-x, Ctrl-C) does not leave it building
        shutil.rmtree(build.cache, ignore_errors=True)


@pytest.fixture(scope="session")
def fresh_builds(request: pytest.FixtureRequest) -> BuildResult:
    """The bundled model's conversion, the C kernels and the demo parent, each built from
    scratch in an empty cache and timed (by the background build, waited for here); then
    published into the machine cache where it lacks them (same keys), so a run that needs
    them builds each once."""
    # Started here where collection did not foresee it (the machine cache lost its demo parent since).
    build = request.config.stash.get(FRESH_BUILD, None) or start_fresh_build(request.config)
    result = build.result()
    for kind in ("gguf", "kernels", "demo-parent"):
        for entry in (build.cache / kind).iterdir() if (build.cache / kind).is_dir() else ():
            publish(entry, MACHINE_CACHE / kind / entry.name)
    return dataclasses.replace(result, demo_parent=MACHINE_CACHE / result.demo_parent)  # published there


def publish(built: Path, target: Path) -> None:
    """Copy a cache entry where the machine cache lacks it, under a temporary name first:
    a reader never sees half of it."""
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    copied = work / target.name
    (shutil.copytree if built.is_dir() else shutil.copy2)(built, copied)
    copied.rename(target)
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def demo_parent(request: pytest.FixtureRequest, smollm2_dir: Path) -> Path:
    """The real demo parent from the machine cache; where it is missing, the fresh build's."""
    from evaluation.demo_parent import built_demo_parent

    return built_demo_parent() or request.getfixturevalue("fresh_builds").demo_parent


@pytest.fixture
def isolated_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The app module with its own outputs folder, votes database and model cache."""
    import app
    from inference import ModelCache, cache

    monkeypatch.setenv("SLERP_ARENA_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.setenv("SLERP_ARENA_VOTES", str(tmp_path / "votes.sqlite"))
    monkeypatch.setattr(cache, "MODELS", ModelCache())
    return app


@pytest.fixture
def served_app(isolated_app):
    """The isolated app, launched on a free local port; yields its URL."""
    demo = isolated_app.queued(isolated_app.build_app())
    _, url, _ = demo.launch(prevent_thread_lock=True, show_error=True, quiet=True)
    yield url
    demo.close()


@pytest.fixture
def browser_page(served_app):
    """A Debian Chromium page (Playwright, no browser download) on the served app,
    1400x900 like a laptop; screenshots go to ARTIFACTS."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(served_app)
        yield page
        browser.close()
