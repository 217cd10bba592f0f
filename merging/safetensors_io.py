"""Chunked reads and streaming writes of the safetensors format (headers are read and
validated in core/checkpoints.py).

Why not `safe_open`: it memory-maps the file, and every page touched stays in the
process RSS while the file is open (measured: 512 MB RSS after reading one 269 MB
SmolLM2 file). Plain positioned reads keep RSS at the size of the chunk in hand. The
format is tiny: u64 little-endian header length, a JSON header {name: {dtype, shape,
data_offsets}}, then the raw bytes — so the writer can emit the header first (all
shapes are known from the plan) and then stream tensors into place one chunk at a time.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import queue
import struct
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from core.checkpoints import DTYPE_NAMES, TensorEntry
from core.errors import UserError

# The writer's own chunk buffers, reused: the chunk being filled, two queued, one being
# written. 4 MB holds a 1M-element float32 chunk (larger chunks get a buffer of their own).
WRITE_BLOCKS = 4
WRITE_BLOCK_BYTES = 4 * 2**20


def read_elements(entry: TensorEntry, start: int, stop: int) -> torch.Tensor:
    """Elements [start, stop) of the flattened tensor, as a new 1-D tensor."""
    buffer = torch.empty((stop - start) * entry.dtype.itemsize, dtype=torch.uint8)  # uninitialized: no zero-fill
    fd = os.open(entry.file, os.O_RDONLY)
    try:
        read_into(fd, entry, start, stop, buffer)
    finally:
        os.close(fd)
    return buffer.view(entry.dtype)


# map_elements' views are read-only on purpose (nothing writes parent bytes). torch warns
# once per process about a read-only buffer: that one warning is spent here, silenced.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.frombuffer(b"\0", dtype=torch.uint8)


def map_elements(fd: int, entry: TensorEntry, start: int, stop: int) -> torch.Tensor:
    """Elements [start, stop) of `entry` as a read-only view of the file's pages (`fd`:
    an open descriptor of entry.file), mapped and faulted in now (MAP_POPULATE: a cold
    read happens in the calling thread, not at first use). Nothing is copied, which from
    the page cache is several times cheaper than a positioned read. The mapping lives
    as long as the view; while it does its pages count in the process RSS, which is why
    the merge maps only what its RAM budget allows."""
    item = entry.dtype.itemsize
    first, last = entry.start + start * item, entry.start + stop * item
    base = first - first % mmap.ALLOCATIONGRANULARITY
    window = mmap.mmap(fd, last - base, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE, prot=mmap.PROT_READ, offset=base)
    return torch.frombuffer(window, dtype=entry.dtype, count=stop - start, offset=first - base)


def read_into(fd: int, entry: TensorEntry, start: int, stop: int, out: torch.Tensor) -> None:
    """Elements [start, stop) of `entry` into `out`, a uint8 tensor of exactly their size,
    by positioned reads on `fd` (an open descriptor of entry.file; no shared file offset,
    so one descriptor serves any thread)."""
    view = memoryview(out.numpy())
    offset = entry.start + start * entry.dtype.itemsize
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n == 0:
            raise UserError(str(entry.file), "file ended early", "re-download the model")
        done += n


def chunk_ranges(numel: int, chunk: int) -> Iterator[tuple[int, int]]:
    for start in range(0, numel, chunk):
        yield start, min(numel, start + chunk)


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class StreamingWriter:
    """Writes one safetensors file whose header is fixed up front; tensors must then be
    written in the declared order, in as many chunks as the caller likes.

    The bytes go to disk from a background thread (file writes release the GIL), so the
    next tensor is computed while the kernel absorbs this one; a short queue bounds the
    memory held by chunks in flight. Chunks are best filled in `buffer()`s: the writer
    reuses their memory once written, where fresh tensors cost page faults every time."""

    def __init__(self, path: Path, tensors: list[PlannedTensor]):
        header: dict[str, object] = {"__metadata__": {"format": "pt"}}
        offset = 0
        for t in tensors:
            header[t.name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
            offset += t.nbytes
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # keep the data 8-byte aligned, as safetensors does
        self.path = path
        self.expected_size = 8 + len(encoded) + offset
        self._fh = open(path, "wb")  # noqa: SIM115 -- owned by the writer, closed by close()/abort()
        self._fh.write(struct.pack("<Q", len(encoded)) + encoded)
        self._queue: queue.Queue[tuple[torch.Tensor, torch.Tensor | None] | None] = queue.Queue(maxsize=WRITE_BLOCKS - 2)
        self._free: queue.Queue[torch.Tensor] = queue.Queue()
        for _ in range(WRITE_BLOCKS):
            self._free.put(torch.empty(WRITE_BLOCK_BYTES, dtype=torch.uint8))  # pages touched on first use
        self._lent: dict[int, torch.Tensor] = {}
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name=f"write {path.name}", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while (item := self._queue.get()) is not None:
            data, block = item
            if self._error is None:
                try:
                    self._fh.write(memoryview(data.numpy()))
                except BaseException as exc:  # reported by the next write() or close()
                    self._error = exc
            if block is not None:
                self._free.put(block)

    def buffer(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        """A 1-D tensor to fill with the next chunk and pass to write(); waits while all
        the writer's buffers are on their way to disk."""
        if numel * dtype.itemsize > WRITE_BLOCK_BYTES:
            return torch.empty(numel, dtype=dtype)
        block = self._free.get()
        self._lent[block.data_ptr()] = block
        return block[: numel * dtype.itemsize].view(dtype)

    def write(self, chunk: torch.Tensor) -> int:
        if self._error is not None:
            raise self._error
        data = chunk.contiguous().reshape(-1).view(torch.uint8)
        self._queue.put((data, self._lent.pop(data.data_ptr(), None)))
        return data.numel()

    def _finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._fh.close()

    def abort(self) -> None:
        self._finish()

    def close(self) -> None:
        self._finish()
        if self._error is not None:
            raise self._error
        if self.path.stat().st_size != self.expected_size:
            raise UserError(str(self.path), "written size does not match the header", "report this as a bug")
