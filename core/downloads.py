"""Hub downloads a visitor can watch and cancel: MB done, MB/s and time left, from
huggingface_hub's own byte counts (snapshot_download's `tqdm_class`).

A caller that waits for a model (a chat pane's load) runs the resolve inside
`watching(repo, report, cancelled)`: `report` gets a Progress as bytes arrive (in the
caller's context, though files download in worker threads), and setting
`cancelled` stops the download at its next chunk. A dropped connection resumes where it
stopped (huggingface_hub asks for the rest with Range). After a cancel, the files that
were complete stay in the Hub cache and the next try fetches only the others; the file
that was cut starts over (huggingface_hub 2.x keeps no partial file between calls).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import constants
from huggingface_hub.utils import tqdm as hub_tqdm

from core.errors import UserError

# Bytes between progress reports (and cancel checks): huggingface_hub reads 10 MB at a
# time, 10 s between lines on a 1 MB/s link.
constants.DOWNLOAD_CHUNK_SIZE = 1024 * 1024


@dataclass(frozen=True)
class Progress:
    repo: str
    done: int  # bytes
    total: int
    seconds: float  # since the download started
    resumed: int = 0  # bytes already there when it started (a resumed download): not part of the rate

    def line(self) -> str:
        rate = (self.done - self.resumed) / self.seconds if self.seconds > 0 else 0.0
        left = f", about {(self.total - self.done) / rate:.0f} s left" if rate > 0 and self.total > self.done else ""
        return f"{self.done / 1e6:.0f} of {self.total / 1e6:.0f} MB downloaded, {rate / 1e6:.1f} MB/s{left}"


@dataclass
class _Watch:
    repo: str
    report: Callable[[Progress], None]
    cancelled: threading.Event
    started: float
    context: contextvars.Context  # the caller's: a report runs in it (Gradio finds its progress bar there)
    expected: int = 0  # bytes still to fetch, from a dry run: huggingface_hub's total grows file by file


_watch: contextvars.ContextVar[_Watch | None] = contextvars.ContextVar("download_watch", default=None)


@contextlib.contextmanager
def watching(repo: str, report: Callable[[Progress], None], cancelled: threading.Event | None = None) -> Iterator[None]:
    """Report the progress of the Hub downloads started inside, and stop them once `cancelled` is set."""
    token = _watch.set(_Watch(repo, report, cancelled or threading.Event(), time.monotonic(), contextvars.copy_context()))
    try:
        yield
    finally:
        _watch.reset(token)


def snapshot(repo: str, patterns: list[str]) -> Path:
    """snapshot_download of the files matching `patterns`. Watched, a dry run first sums the
    bytes still to fetch (cached files are not), so the line's total is right from the first MB."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import DryRunError

    from core.hub_access import hub_token

    token = hub_token()
    watch = _watch.get()
    if watch is not None:
        try:
            plan = snapshot_download(repo, allow_patterns=patterns, token=token, dry_run=True)
        except DryRunError:  # the repo unreachable: the download below raises the error that says why
            plan = []
        watch.expected = sum(item.file_size or 0 for item in plan if item.will_download)
        watch.started = time.monotonic()  # per repo: a merge's second parent gets its own MB/s
    return Path(snapshot_download(repo, allow_patterns=patterns, token=token, tqdm_class=WatchedBar))


class WatchedBar(hub_tqdm):
    """snapshot_download's progress bars (tqdm_class): the bar of bytes received reports to
    the watcher its creator ran under. Files download in worker threads, all updating
    that one bar: the count and the report are under a lock."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.watch = _watch.get()
        self.counting = threading.Lock()
        self.counts_bytes = str(kwargs.get("desc", "")).startswith("Downloading bytes")  # (a disabled tqdm keeps no desc)
        self.received = 0

    def update(self, n: float | None = 1) -> bool | None:
        watch = self.watch
        if watch is not None and self.counts_bytes:
            if watch.cancelled.is_set():
                raise UserError("download", f"the download of '{watch.repo}' was cancelled",
                                "start it again: the files already complete are kept")
            with self.counting:
                self.received += int(n or 0)
                total = max(int(self.total or 0), watch.expected)
                # Files arrive in worker threads; the report runs in the caller's context (one at a time: the lock).
                watch.context.run(watch.report, Progress(watch.repo, self.received, total, time.monotonic() - watch.started))
        return super().update(n)
