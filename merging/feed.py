"""The merge's working set under one RAM budget (--max-ram): a reader thread that fetches
the parents' bytes into a fixed set of slots ahead of the math, and the float32 scratch
the math runs in. Everything the merge allocates per chunk lives here, allocated once.

Why reuse: on the 2-core dev machine, blending one 1M-element bf16 pair took 7.6 ms with
fresh buffers (as the engine did before) and 0.55 ms in reused ones: every new 4 MB
buffer is paid for again in page faults.

A blended tensor needs two passes (the angle is a sum over the whole tensor). Its blocks
stay in their slots between the passes when the budget has room (one read per tensor);
beyond it, the first blocks are kept and the others read again for the second pass
(straight from the page cache: they were read a moment ago).
"""

from __future__ import annotations

import math
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from core.errors import UserError
from merging.planning import TensorPlan
from merging.safetensors_io import WRITE_BLOCK_BYTES, WRITE_BLOCKS, TensorEntry, read_into
from merging.sizes import megabytes, parse_size

# The math's unit: the angle's sums are taken per 1M-element piece (4 MB of float32), so
# whatever the budget, every piece is summed in the same order and the output is the same
# to the bit (tests/test_merge.py forces both paths).
CHUNK_ELEMENTS = 1024 * 1024
# One block of a pair: 4M bf16 elements, 2M float32, 1M float64; always whole pieces.
SLOT_BYTES = 16 * CHUNK_ELEMENTS
SCRATCH_BYTES = 2 * CHUNK_ELEMENTS * 4  # the pair's float32 piece
# The plan, headers, threads and what the allocator keeps beyond the live buffers:
# calibrated against the VmHWM of real merges (tests/test_dry_run.py measures them).
FIXED_BYTES = 8 * 10**6
RESERVED_BYTES = FIXED_BYTES + SCRATCH_BYTES + WRITE_BLOCKS * WRITE_BLOCK_BYTES
# 128 MB: `python -m merging` itself takes ~245 MB (imports), so a merge stays under
# 400 MB of RSS; it holds 5 slots, enough to read a 4096x4096 bf16 pair once.
DEFAULT_MAX_RAM = 128 * 10**6
MIN_SLOTS = 2  # the block in hand and one read ahead
MIN_MAX_RAM = RESERVED_BYTES + MIN_SLOTS * SLOT_BYTES
MAX_RAM_EXAMPLES = "128MB, 512MB or 2GB"


def parse_max_ram(text: str | int | None, field: str = "--max-ram") -> int:
    """The budget in bytes; None or "" is the default. Too small a budget is refused."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return DEFAULT_MAX_RAM
    nbytes = text if isinstance(text, int) else parse_size(text, field, MAX_RAM_EXAMPLES)
    if nbytes < MIN_MAX_RAM:
        need = math.ceil(MIN_MAX_RAM / 1e6)
        raise UserError(field, f"{megabytes(nbytes)} is less than the {need} MB a merge needs", f"use {need}MB or more")
    return nbytes


def slots_for(max_ram: int) -> int:
    return max(MIN_SLOTS, (max_ram - RESERVED_BYTES) // SLOT_BYTES)


@dataclass(frozen=True)
class Job:
    """How one output tensor is fetched: from `entries` (the base alone for a copy, else
    both parents) in blocks of `block` elements; a blend reads them twice, except the
    first `kept` blocks, which stay in their slots between the two passes."""

    name: str
    entries: tuple[TensorEntry, ...]
    numel: int
    block: int
    blend: bool
    kept: int

    @property
    def blocks(self) -> int:
        return math.ceil(self.numel / self.block)

    def range(self, i: int) -> tuple[int, int]:
        return i * self.block, min(self.numel, (i + 1) * self.block)

    def reads(self) -> Iterator[int]:
        """Block indices in the order the math takes them."""
        yield from range(self.blocks)
        if self.blend:
            yield from range(self.kept, self.blocks)

    @property
    def reread_bytes(self) -> int:
        if not self.blend:
            return 0
        return sum(self.range(i)[1] - self.range(i)[0] for i in range(self.kept, self.blocks)) * self.pair_itemsize

    @property
    def pair_itemsize(self) -> int:
        return sum(e.dtype.itemsize for e in self.entries)

    @property
    def offsets(self) -> tuple[int, ...]:
        """Where each entry's part starts in a slot: the second one 64-byte aligned after
        the first one's largest part (aligned for any dtype; a full block is 1 MB-aligned)."""
        first = min(self.block, self.numel) * self.entries[0].dtype.itemsize
        return (0, -(-first // 64) * 64)[: len(self.entries)]

    @property
    def slot_bytes(self) -> int:
        return self.offsets[-1] + min(self.block, self.numel) * self.entries[-1].dtype.itemsize


def job_for(plan: TensorPlan, slots: int) -> Job:
    # A copy (non-float, or a model merged with itself) reads the base alone; a blend and
    # t = 0 / 1 (whose angle is reported) read both.
    entries = (plan.base,) if not plan.compute_dtype.is_floating_point or plan.same_bytes else (plan.base, plan.other)
    itemsize = sum(e.dtype.itemsize for e in entries)
    block = CHUNK_ELEMENTS * max(1, SLOT_BYTES // (CHUNK_ELEMENTS * itemsize))
    blocks = math.ceil(plan.numel / block)
    # Keep a whole tensor when it leaves one slot free for the reader (it then reads the
    # next tensor during the second pass); otherwise keep what leaves two, so re-reads and
    # the math still overlap. Never more than slots - 1: the reader must always progress.
    kept = blocks if blocks < slots else max(0, slots - 2)
    return Job(plan.name, entries, plan.numel, block, plan.blends, kept if plan.blends else 0)


def working_set(tensors: list[TensorPlan], max_ram: int) -> int:
    """The RAM a merge of `tensors` under `max_ram` adds to the process running it: the
    slots it fills, the scratch and the writer's blocks it touches (never above max_ram)."""
    slots = slots_for(max_ram)
    jobs = [job_for(t, slots) for t in tensors]
    if not jobs:
        return FIXED_BYTES
    piece = min(CHUNK_ELEMENTS, max(t.numel for t in tensors))
    out_chunk = min(WRITE_BLOCK_BYTES, piece * max(t.out_dtype.itemsize for t in tensors))
    total_read = sum(j.numel * j.pair_itemsize for j in jobs)  # a small model never fills every slot
    return FIXED_BYTES + 2 * piece * 4 + WRITE_BLOCKS * out_chunk + min(slots * max(j.slot_bytes for j in jobs), total_read)


def working_set_for(largest_numel: int, max_ram: int = DEFAULT_MAX_RAM) -> int:
    """The same for a bf16 merge whose largest tensor has `largest_numel` elements: sizing
    a merge from a config, without the files."""
    entry = TensorEntry(Path("config-only"), torch.bfloat16, (largest_numel,), 0, largest_numel * 2)
    plan = TensorPlan("largest", entry, replace(entry, start=1), 0.5, None, (largest_numel,), torch.bfloat16, torch.bfloat16)
    return working_set([plan], max_ram)


@dataclass(frozen=True)
class Block:
    name: str
    start: int
    stop: int
    slot: int
    parts: tuple[torch.Tensor, ...]  # per entry: elements [start, stop) in its stored dtype

    def pieces(self) -> Iterator[tuple[int, tuple[torch.Tensor, ...]]]:
        """(size, per-entry views) of each math piece: CHUNK_ELEMENTS at tensor offsets
        that are multiples of it (a block starts at one)."""
        for s in range(0, self.stop - self.start, CHUNK_ELEMENTS):
            e = min(self.stop - self.start, s + CHUNK_ELEMENTS)
            yield e - s, tuple(p[s:e] for p in self.parts)


class Feed:
    """Reads every job's blocks, in order, ahead of the math, into at most `slots` slots."""

    def __init__(self, tensors: list[TensorPlan], max_ram: int = DEFAULT_MAX_RAM, device: torch.device | None = None):
        self.slots = slots_for(max_ram)
        self.jobs = {t.name: job_for(t, self.slots) for t in tensors}
        # Slots as large as the largest block (SLOT_BYTES at most): a tiny model's stay tiny.
        self._slot_bytes = -(-max((j.slot_bytes for j in self.jobs.values()), default=0) // 64) * 64
        self._memory = torch.empty(self.slots * self._slot_bytes, dtype=torch.uint8)  # pages are touched as slots fill
        self._free = list(range(self.slots))[::-1]  # a stack: the slots used last are reused first
        self._cond = threading.Condition()
        self._closed = False
        self._ready: queue.Queue[Block | BaseException] = queue.Queue()
        self._fds: dict[Path, int] = {}
        piece = min(CHUNK_ELEMENTS, max((t.numel for t in tensors), default=1))
        self.scratch = (torch.empty(piece, device=device), torch.empty(piece, device=device))
        self._thread = threading.Thread(target=self._run, args=(list(self.jobs.values()),), name="merge reader", daemon=True)
        self._thread.start()

    def __enter__(self) -> Feed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, jobs: list[Job]) -> None:
        try:
            for job in jobs:
                for i in job.reads():
                    slot = self._take()
                    if slot is None:
                        return
                    start, stop = job.range(i)
                    base = slot * self._slot_bytes
                    parts = []
                    for entry, offset in zip(job.entries, job.offsets, strict=True):
                        raw = self._memory[base + offset: base + offset + (stop - start) * entry.dtype.itemsize]
                        read_into(self._fd(entry.file), entry, start, stop, raw)
                        parts.append(raw.view(entry.dtype))
                    self._ready.put(Block(job.name, start, stop, slot, tuple(parts)))
        except BaseException as exc:  # raised in the math's thread by next()
            self._ready.put(exc)

    def _take(self) -> int | None:
        with self._cond:
            while not self._free and not self._closed:
                self._cond.wait()
            return None if self._closed else self._free.pop()

    def _fd(self, path: Path) -> int:
        if path not in self._fds:
            self._fds[path] = os.open(path, os.O_RDONLY)
        return self._fds[path]

    def next(self, job: Job, i: int) -> Block:
        """Block i of `job`: the reader's next one (they come in the order of Job.reads)."""
        item = self._ready.get()
        if isinstance(item, BaseException):
            raise item
        if (item.name, item.start) != (job.name, job.range(i)[0]):
            raise RuntimeError(f"merge reader out of order: got {item.name}@{item.start}, expected {job.name}@{job.range(i)[0]}")
        return item

    def release(self, block: Block) -> None:
        with self._cond:
            self._free.append(block.slot)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
