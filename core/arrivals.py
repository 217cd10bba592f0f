"""Hub files downloaded while the merge reads them.

The byte ranges come in the order the merge will read them (both parents interleaved,
tensor by tensor), in segments over several connections at once, each written into a
sparse part file at its own offset. A range is usable the moment every byte of it has
arrived: `wait` blocks for exactly the bytes asked, so segments finishing out of order
(parallel connections, a slow segment) cannot be read early. Once a file is complete it
moves into huggingface_hub's cache (blobs/<etag>, linked from its snapshot).

Why plain HTTP ranges, also for files the Hub stores on Xet: the Hub's resolve URL serves
every file over HTTP with Range (its LFS bridge), so the bytes come in the order asked;
hf_xet reconstructs a whole file at once, out of order, and would leave the merge
waiting for the file's end. A cut connection is retried; past RETRIES it refuses in one
line, and what arrived stays in the part file (its spans in a sidecar JSON), so the next
try fetches only the rest.
"""

from __future__ import annotations

import bisect
import contextvars
import fcntl
import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from core.downloads import Progress
from core.errors import UserError
from core.remote import TIMEOUT_S, RemoteFile, check_range, link_into_snapshot, range_headers

SEGMENT_BYTES = 16 * 2**20
CONNECTIONS = 8
CHUNK_BYTES = 256 * 2**10
RETRIES = 3
BUSY = {408, 429, 500, 502, 503, 504}  # statuses worth another try, as huggingface_hub retries them
PART = ".slerp-part"  # beside the blob, as huggingface_hub's own .incomplete


class Spans:
    """Disjoint, sorted byte ranges [start, stop)."""

    def __init__(self, spans: list[list[int]] | None = None) -> None:
        self.starts: list[int] = []
        self.stops: list[int] = []
        for start, stop in spans or []:
            self.add(start, stop)

    def add(self, start: int, stop: int) -> None:
        i = bisect.bisect_left(self.stops, start)  # the first span that ends at or after start
        j = bisect.bisect_right(self.starts, stop)  # past the last span that starts at or before stop
        if i < j:
            start, stop = min(start, self.starts[i]), max(stop, self.stops[j - 1])
        self.starts[i:j], self.stops[i:j] = [start], [stop]

    def covers(self, start: int, stop: int) -> bool:
        i = bisect.bisect_right(self.starts, start) - 1
        return stop <= start or (i >= 0 and self.stops[i] >= stop)

    def missing(self, start: int, stop: int) -> list[tuple[int, int]]:
        gaps, at = [], start
        i = max(0, bisect.bisect_right(self.starts, start) - 1)
        while at < stop and i < len(self.starts) and self.starts[i] < stop:
            if self.starts[i] > at:
                gaps.append((at, self.starts[i]))
            at = max(at, self.stops[i])
            i += 1
        if at < stop:
            gaps.append((at, stop))
        return gaps

    @property
    def total(self) -> int:
        return sum(b - a for a, b in zip(self.starts, self.stops, strict=True))

    def as_list(self) -> list[list[int]]:
        return [[a, b] for a, b in zip(self.starts, self.stops, strict=True)]


def part_path(file: RemoteFile) -> Path:
    return file.blob.with_name(file.blob.name + PART)


def sidecar_path(file: RemoteFile) -> Path:
    return file.blob.with_name(file.blob.name + PART + ".json")


def kept_spans(file: RemoteFile) -> Spans:
    """What an earlier, cut try left of `file` (nothing when its part file is gone)."""
    part, sidecar = part_path(file), sidecar_path(file)
    try:
        saved = json.loads(sidecar.read_text())
        if part.stat().st_size == file.size == saved["size"]:
            return Spans(saved["have"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return Spans()


@dataclass
class _Part:
    file: RemoteFile
    fd: int  # for the bytes: the merge's reader maps it, and a mapping duplicates it
    lock: int  # for the lock alone, so that it ends at close() however long a mapping lives
    have: Spans
    saved_at: float = 0.0
    done: bool = False  # moved into the cache

    @property
    def complete(self) -> bool:
        return self.have.covers(0, self.file.size)


def _open_part(file: RemoteFile) -> _Part:
    """The part file of `file`, locked for this download (another merge on this machine,
    in this process or another, may not write into it meanwhile), with what an earlier try
    left of it and its header's bytes."""
    part = part_path(file)
    part.parent.mkdir(parents=True, exist_ok=True)
    while True:
        lock = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock)
            raise UserError("download", f"'{file.repo}' is downloading for another merge on this machine",
                            "try again when that merge has finished: the parent is cached then") from None
        if os.path.exists(part) and os.fstat(lock).st_ino == os.stat(part).st_ino:
            break
        os.close(lock)  # locked a file another merge had just moved into the cache: open the path again
    fd = os.open(part, os.O_RDWR)  # its own open file: the lock is not shared with the mappings of it
    try:
        have = kept_spans(file)
        if not have.total:
            os.ftruncate(fd, 0)  # nothing kept: no stale bytes either, and no sidecar that would vouch for them
            sidecar_path(file).unlink(missing_ok=True)
        os.ftruncate(fd, file.size)  # sparse: blocks are allocated as bytes arrive
        os.pwrite(fd, file.head, 0)
    except BaseException:
        os.close(fd)
        os.close(lock)
        raise
    have.add(0, len(file.head))
    return _Part(file, fd, lock, have)


class Arrivals:
    """Downloads `files`, reading first the byte ranges in `order` ((path, start, stop) with
    path a RemoteFile.local), then whatever else the files hold. `cancel` stops it."""

    def __init__(self, files: list[RemoteFile], order: list[tuple[Path, int, int]], cancel: threading.Event,
                 token: str | None) -> None:
        self.cancel = cancel
        self.token = token
        self.error: BaseException | None = None
        self._stopping = False
        self._cond = threading.Condition()
        self.parts: dict[Path, _Part] = {}
        try:
            for file in files:
                self.parts[file.local] = _open_part(file)
            for part in self.parts.values():
                self._finish_if_complete(part)  # a part that an earlier try completed
        except BaseException:
            for part in self.parts.values():
                os.close(part.fd)
                os.close(part.lock)
            raise
        self.resumed = sum(p.have.total for p in self.parts.values())
        self._queue = deque(self._segments(order))
        self.started = time.monotonic()
        # Each connection in a copy of the caller's context: the visitor whose token and words the errors use.
        self._threads = [threading.Thread(target=contextvars.copy_context().run, args=(self._work,), name=f"download {i}",
                                          daemon=True) for i in range(min(CONNECTIONS, len(self._queue)))]
        for thread in self._threads:
            thread.start()

    def __enter__(self) -> Arrivals:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _segments(self, order: list[tuple[Path, int, int]]) -> list[tuple[_Part, int, int]]:
        queued = {path: Spans(part.have.as_list()) for path, part in self.parts.items()}
        wanted = [(path, a, b) for path, a, b in order if path in self.parts]
        wanted += [(path, 0, part.file.size) for path, part in self.parts.items()]  # the rest, for the cache
        segments = []
        for path, start, stop in wanted:
            for a, b in queued[path].missing(start, stop):
                segments += [(self.parts[path], s, min(b, s + SEGMENT_BYTES)) for s in range(a, b, SEGMENT_BYTES)]
                queued[path].add(a, b)
        return segments

    def holds(self, path: Path) -> bool:
        return path in self.parts

    def wait(self, path: Path, start: int, stop: int, abandon: threading.Event) -> int:
        """A descriptor of `path` (its part file) once bytes [start, stop) have arrived."""
        part = self.parts[path]
        with self._cond:
            while not part.have.covers(start, stop):
                if self.error is not None:
                    raise self.error
                if self.cancel.is_set() or abandon.is_set() or self._stopping:
                    raise UserError("download", "cancelled by the user", "start it again: what arrived is kept")
                self._cond.wait(0.2)
        return part.fd

    def progress(self, repo: str) -> Progress:
        with self._cond:
            done = sum(p.have.total for p in self.parts.values())
        total = sum(p.file.size for p in self.parts.values())
        return Progress(repo, done, total, time.monotonic() - self.started, self.resumed)

    @property
    def done(self) -> bool:
        with self._cond:
            return all(p.complete for p in self.parts.values())

    def finish(self) -> None:
        """Wait until every file is complete and in the cache."""
        with self._cond:
            while not all(p.done for p in self.parts.values()):
                if self.error is not None:
                    raise self.error
                if self.cancel.is_set():
                    raise UserError("download", "cancelled by the user", "start it again: what arrived is kept")
                self._cond.wait(0.2)

    def close(self) -> None:
        """Stop every connection; keep what arrived of the incomplete files for the next try."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join()
        for part in self.parts.values():
            try:
                if not part.done:
                    self._save(part)
            except OSError:  # a full disk: the next try fetches those bytes again
                logging.getLogger(__name__).warning("could not record what arrived of %s", part.file.name, exc_info=True)
            finally:
                os.close(part.fd)
                os.close(part.lock)
        self.parts.clear()

    def _next(self) -> tuple[_Part, int, int] | None:
        with self._cond:
            if self._stopping or self.cancel.is_set() or self.error is not None or not self._queue:
                return None
            return self._queue.popleft()

    def _work(self) -> None:
        from core.sources import hub_errors

        while (segment := self._next()) is not None:
            try:
                with hub_errors(segment[0].file.repo):
                    self._fetch(*segment)
            except BaseException as exc:  # noqa: BLE001 -- handed to the merge's thread by wait()
                with self._cond:
                    self.error = self.error or exc
                    self._cond.notify_all()
                return

    def _fetch(self, part: _Part, start: int, stop: int) -> None:
        """One segment, resumed within itself after a cut, up to RETRIES times."""
        from huggingface_hub.errors import HfHubHTTPError
        from huggingface_hub.utils import get_session, hf_raise_for_status

        tries = 0
        while start < stop and not (self._stopping or self.cancel.is_set()):
            try:
                with get_session().stream("GET", part.file.url, headers=range_headers(self.token, start, stop),
                                          follow_redirects=True, timeout=TIMEOUT_S) as response:
                    if response.status_code >= 400:
                        response.read()
                        hf_raise_for_status(response)
                    check_range(response, part.file.name, part.file.repo, start)
                    for chunk in response.iter_raw(CHUNK_BYTES):
                        if self._stopping or self.cancel.is_set():
                            return
                        chunk = chunk[:stop - start]
                        os.pwrite(part.fd, chunk, start)
                        self._arrived(part, start, start + len(chunk))
                        start += len(chunk)
                        tries = 0  # progress: a later cut gets its own retries
                        if start >= stop:
                            break
                if start < stop:
                    raise ConnectionError("the response ended early")
            except UserError:
                raise
            except Exception as exc:  # noqa: BLE001 -- a cut or stalled connection, in the HTTP library's own types
                if isinstance(exc, OSError) and not isinstance(exc, ConnectionError | TimeoutError):
                    raise  # this machine's side (a full disk): hub_errors says so, and retrying cannot help
                status = exc.response.status_code if isinstance(exc, HfHubHTTPError) and exc.response is not None else None
                if isinstance(exc, HfHubHTTPError) and status not in BUSY:
                    raise  # refused (gated, missing, a bad token): hub_errors gives its line
                tries += 1
                if tries > RETRIES:
                    progress = self.progress(part.file.repo)
                    raise UserError("download", f"the connection to the Hub broke while downloading '{part.file.repo}' "
                                    f"({status or exc.__class__.__name__}, {RETRIES} retries); {progress.done / 1e6:,.0f} of "
                                    f"{progress.total / 1e6:,.0f} MB arrived and are kept",
                                    "try again: the download resumes where it stopped") from None
                self.cancel.wait(0.5 * tries)

    def _arrived(self, part: _Part, start: int, stop: int) -> None:
        with self._cond:
            part.have.add(start, stop)
            self._cond.notify_all()
        if time.monotonic() - part.saved_at > 1.0:
            self._save(part)
        self._finish_if_complete(part)

    def _save(self, part: _Part) -> None:
        """The sidecar of spans that arrived: their bytes are in the part file (the page
        cache keeps them through a killed process), so the next try may skip them."""
        with self._cond:  # one writer at a time, and none once the part is in the cache
            if part.done:
                return
            part.saved_at = time.monotonic()
            sidecar = sidecar_path(part.file)
            temporary = sidecar.with_name(f"{sidecar.name}.tmp")
            temporary.write_text(json.dumps({"size": part.file.size, "have": part.have.as_list()}))
            os.replace(temporary, sidecar)

    def _finish_if_complete(self, part: _Part) -> None:
        with self._cond:
            if not part.complete or part.done:
                return
            part.done = True
            if part.file.blob.exists():  # another merge finished it first (after this one's plan)
                part_path(part.file).unlink()
            else:
                os.replace(part_path(part.file), part.file.blob)  # the open descriptor follows the file
            sidecar_path(part.file).unlink(missing_ok=True)
            link_into_snapshot(part.file)
