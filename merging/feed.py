"""The merge's working set under one RAM budget (--max-ram): a reader thread that maps
the parents' blocks ahead of the math, at most `slots` of them at a time, and the float32
scratch the math runs in, allocated once.

Why reuse: on the 2-core dev machine, blending one 1M-element bf16 pair took 7.6 ms with
fresh buffers (as the engine did before) and 0.55 ms in reused ones: every new 4 MB
buffer is paid for again in page faults. Why map (safetensors_io.map_elements): the
blocks are read where the page cache holds them, without a copy.

A blended tensor needs two passes (the angle is a sum over the whole tensor). Its blocks
stay mapped between the passes when the budget has room (one read per tensor); beyond
it, the first blocks are kept and the others mapped again for the second pass (straight
from the page cache: they were read a moment ago).
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from core.checkpoints import TensorEntry
from core.errors import UserError
from merging.planning import TensorPlan
from merging.safetensors_io import WRITE_BLOCK_BYTES, WRITE_BLOCKS, map_elements
from merging.sizes import megabytes, parse_size

if TYPE_CHECKING:
    from core.arrivals import Arrivals

# The math's unit: the angle's sums are taken per 1M-element piece (4 MB of float32), so
# whatever the budget, every piece is summed in the same order and the output is the same
# to the bit (tests/test_merge.py forces both paths).
CHUNK_ELEMENTS = 1024 * 1024
# One block of a pair: 4M bf16 elements, 2M float32, 1M float64; always whole pieces.
SLOT_BYTES = 16 * CHUNK_ELEMENTS
PAGE = 4096  # a block's mapping starts on a page: up to one more page per parent
SCRATCH_BYTES = 2 * CHUNK_ELEMENTS * 4  # the pair's float32 piece
# The plan, headers, threads and what the allocator keeps beyond the live buffers:
# calibrated against the VmHWM of real merges (tests/test_dry_run.py measures them).
FIXED_BYTES = 2 * 10**6
RESERVED_BYTES = FIXED_BYTES + SCRATCH_BYTES + WRITE_BLOCKS * WRITE_BLOCK_BYTES
# 128 MB: `python -m merging` itself takes ~245 MB (imports), so a merge stays under
# 400 MB of RSS; it holds 6 slots, enough to read a 4096x4096 bf16 pair once.
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


@contextmanager
def single_threaded_math() -> Iterator[None]:
    """Run this thread's torch ops on one core, leaving other threads as they are.

    Why: the merge's reader and writer threads need a core too, and torch's 2 OpenMP
    threads stall whenever another thread holds one of the 2 cores (they wait for each
    other at every op), ten times slower when one other process runs. One thread also
    sums the angle in one order on any machine, so a merge gives the same bits whatever
    the core count.

    torch.set_num_threads sets both this thread's count and the default new threads
    start with; a short-lived helper thread puts the default back at once, so a chat
    thread started during a merge keeps its cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    restore = threading.Thread(target=torch.set_num_threads, args=(before,))
    restore.start()
    restore.join()
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    blocks mapped at once, the scratch and the writer's buffers (never above max_ram).
    The reader runs ahead as far as the slots let it, so at its peak it holds the largest
    run of `slots` blocks in the order it maps them."""
    slots = slots_for(max_ram)
    jobs = [job_for(t, slots) for t in tensors]
    if not jobs:
        return FIXED_BYTES
    mapped = [(j.range(i)[1] - j.range(i)[0]) * j.pair_itemsize + PAGE * len(j.entries) for j in jobs for i in j.reads()]
    window = peak = sum(mapped[:slots])
    for i in range(slots, len(mapped)):
        window += mapped[i] - mapped[i - slots]
        peak = max(peak, window)
    piece = min(CHUNK_ELEMENTS, max(t.numel for t in tensors))
    out_chunk = min(WRITE_BLOCK_BYTES, piece * max(t.out_dtype.itemsize for t in tensors))
    return FIXED_BYTES + 2 * piece * 4 + WRITE_BLOCKS * out_chunk + peak


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


def reads_in_order(tensors: list[TensorPlan]) -> list[tuple[Path, int, int]]:
    """(file, first byte, end byte) of each tensor the merge reads, in the order it reads
    them: what a download should fetch first."""
    return [(e.file, e.start, e.start + e.nbytes) for t in tensors for e in job_for(t, MIN_SLOTS).entries]


class MappedFiles:
    """The blocks' bytes, mapped from the parents' files; with `arrivals` (core/arrivals.py),
    the files still downloading are read as their bytes arrive."""

    def __init__(self, arrivals: Arrivals | None = None) -> None:
        self.arrivals = arrivals
        self.closing = threading.Event()  # the feed is closing: stop waiting for bytes
        self._fds: dict[Path, int] = {}

    def view(self, entry: TensorEntry, start: int, stop: int) -> torch.Tensor:
        if self.arrivals is not None and self.arrivals.holds(entry.file):
            item = entry.dtype.itemsize
            fd = self.arrivals.wait(entry.file, entry.start + start * item, entry.start + stop * item, self.closing)
        else:
            if entry.file not in self._fds:
                self._fds[entry.file] = os.open(entry.file, os.O_RDONLY)
            fd = self._fds[entry.file]
        return map_elements(fd, entry, start, stop)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


class Feed:
    """Maps every job's blocks, in order, ahead of the math: at most `slots` at a time.
    `reader` gives a block's bytes (MappedFiles by default); `on_wait` is called every half
    second the math waits for them (a download's progress)."""

    def __init__(self, tensors: list[TensorPlan], max_ram: int = DEFAULT_MAX_RAM, device: torch.device | None = None,
                 reader: MappedFiles | None = None, on_wait: Callable[[], None] | None = None):
        self.slots = slots_for(max_ram)
        self.reader = reader or MappedFiles()
        self.on_wait = on_wait
        self.jobs = {t.name: job_for(t, self.slots) for t in tensors}
        self._free = list(range(self.slots))
        self.waited = 0.0  # seconds the math spent waiting for the reader (the dry run times the math without it)
        self._cond = threading.Condition()
        self._closed = False
        self._ready: queue.Queue[Block | BaseException] = queue.Queue()
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
                    # No local name keeps the mapping: while this thread waits for the next
                    # slot, a block the math has finished with must already be unmapped
                    # (a name held here kept one block too many mapped whenever the math
                    # caught up with the reader, 5 MB over the smallest budget in CI).
                    self._ready.put(Block(job.name, start, stop, slot,
                                          tuple(self.reader.view(e, start, stop) for e in job.entries)))
        except BaseException as exc:  # raised in the math's thread by next()
            self._ready.put(exc)

    def _take(self) -> int | None:
        with self._cond:
            while not self._free and not self._closed:
                self._cond.wait()
            return None if self._closed else self._free.pop()

    def next(self, job: Job, i: int) -> Block:
        """Block i of `job`: the reader's next one (they come in the order of Job.reads)."""
        started = time.perf_counter()
        while True:
            try:
                item = self._ready.get(timeout=0.5)
                break
            except queue.Empty:
                if self.on_wait is not None:
                    self.on_wait()
        self.waited += time.perf_counter() - started
        if isinstance(item, BaseException):
            try:
                raise item
            finally:
                del item  # no cycle (this frame, its traceback) that keeps the blocks it went through mapped
        if (item.name, item.start) != (job.name, job.range(i)[0]):
            raise RuntimeError(f"merge reader out of order: got {item.name}@{item.start}, expected {job.name}@{job.range(i)[0]}")
        return item

    def release(self, slot: int) -> None:
        """Give a block's slot back, once no view of the block is left (its mapping goes
        with the last one)."""
        with self._cond:
            self._free.append(slot)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.reader.closing.set()
        self._thread.join()
        while not self._ready.empty():  # blocks mapped ahead that no one will read: unmapped now
            self._ready.get_nowait()
        self.reader.close()
