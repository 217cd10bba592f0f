"""`python app.py` in a child process with its own cache, outputs and votes, as a
visitor's browser or client meets it (benchmarks drive it; tests use the in-process app)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from testkit.browser import free_port

REPO = Path(__file__).resolve().parent.parent


def wait_http(url: str, deadline: float) -> None:
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(url)


@contextlib.contextmanager
def app_process(cache: str | None = None, repo: Path = REPO, timeout_s: float = 300,
                env: dict[str, str] | None = None, log: Path | None = None) -> Iterator[tuple[str, float]]:
    """The app's URL once it answers, and the seconds that took; stopped on exit. `cache`:
    SLERP_ARENA_CACHE (default: a fresh temporary folder, a first start); `env`: set on
    top (it may replace the outputs folder too); `log`: a file for the app's output (default: dropped)."""
    work = Path(tempfile.mkdtemp(prefix="slerp-arena-app-"))
    port = free_port()
    env = {**os.environ, "SLERP_ARENA_CACHE": cache or str(work / "cache"), "GRADIO_SERVER_PORT": str(port),
           "SLERP_ARENA_OUTPUTS": str(work / "outputs"), "SLERP_ARENA_VOTES": str(work / "votes.sqlite"),
           "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}
    started = time.time()
    output = log.open("w") if log else subprocess.DEVNULL
    app = subprocess.Popen([sys.executable, "app.py"], cwd=repo, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_http(url, started + timeout_s)
        yield url, time.time() - started
    finally:
        app.terminate()
        app.wait(timeout=30)
        if log:
            output.close()
        shutil.rmtree(work, ignore_errors=True)


def text_of(message: dict) -> str:
    """Chatbot content as it comes back from Gradio: a string or a list of text blocks."""
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content if isinstance(block, dict))
