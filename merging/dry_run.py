"""Dry run: what a merge will cost under a RAM budget, without writing anything.

Time is the longer of two figures. The IO: every byte the merge moves (both parents
read, the blocks over the budget read again, the output written) at IO_BYTES_PER_S, a
rate measured on a real 7B merge. The math: one tensor of every kind in the plan (shape,
dtypes, blended or copied) goes through merge_tensor here and now, with a writer that
discards the bytes, and each kind's time is multiplied by how often it occurs (a tensor
over SAMPLE_ELEMENTS is timed on that many of its elements and scaled by its size).
Peak RAM is the merge's own working set under the budget (feed.working_set), not the RSS
of the process that asks: in the app that process also holds the chat models.

Nothing is downloaded: a Hub parent is planned from its headers (core/remote.py), and
the math is timed on random values of each tensor kind's shape and dtype (the time of
SLERP does not depend on the values), so a plan made before a download equals the one
made after it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from core.checkpoints import TensorEntry
from core.errors import UserError
from core.policy import AccessPolicy
from merging.config import MergeConfig
from merging.disk import DiskNeeds, disk_needs
from merging.feed import CHUNK_ELEMENTS, DEFAULT_MAX_RAM, Feed, job_for, single_threaded_math, slots_for
from merging.merge import load_parents, merge_tensor, parents_nbytes, pending_of, working_set_bytes
from merging.planning import TensorPlan, plan_merge
from merging.sizes import megabytes

# Bytes moved per second by `python -m merging` on the Mistral-7B-shaped pair of
# benchmarks/merge_bench.py --size 7b (2 cores, 24 GB RAM, so the 43 GB of parents and
# output never fit the page cache), default budget: reads + re-reads + writes (61.0 GB)
# over the cold run's 41.4 s, output synced (README "Merge at 7B"). The warm median,
# 27.1 s, is 2.25 GB/s: the estimate is for a first merge, with nothing cached.
IO_BYTES_PER_S = 1_470 * 10**6
IO_RATE_SOURCE = "a cold 7B merge's rate on the 2-core dev machine"
SAMPLE_ELEMENTS = 16 * CHUNK_ELEMENTS  # the most of one tensor the math is timed on


@dataclass(frozen=True)
class PlanSummary:
    tensors: int
    blended: int
    num_layers: int
    parents_bytes: int
    output_bytes: int
    peak_ram_bytes: int
    seconds_estimate: float
    measured_bytes_per_s: float  # the output's bytes over the math's measured time
    warnings: list[str]
    max_ram_bytes: int = DEFAULT_MAX_RAM
    read_once: int = 0  # blended tensors whose blocks all stay in RAM between the two passes
    read_bytes: int = 0  # what the merge reads of the parents (a sub-slice leaves layers out)
    reread_bytes: int = 0
    math_seconds: float = 0.0
    io_seconds: float = 0.0
    disk: DiskNeeds | None = None

    def describe(self) -> str:
        moved = self.read_bytes + self.reread_bytes + self.output_bytes
        lines = [
            f"output: {self.tensors} tensors ({self.blended} blended), {self.num_layers} layers, "
            f"{self.output_bytes / 1e6:,.0f} MB on disk (disk needed: {self.output_bytes / 1e6:,.0f} MB + a few kB of metadata)",
            f"parents read: {self.read_bytes / 1e6:,.0f} MB of {self.parents_bytes / 1e6:,.0f} MB, and "
            f"{self.reread_bytes / 1e6:,.0f} MB of it twice ({self.read_once} of {self.blended} blended tensors fit "
            "the budget and are read once)",
            f"RAM budget: {megabytes(self.max_ram_bytes)}; estimated peak RAM: {megabytes(self.peak_ram_bytes)} "
            "of working set (flat in model size; the process running the merge adds its own, about 245 MB for "
            "`python -m merging`)",
            f"estimated time: {self.seconds_estimate:.1f} s (the longer of: {moved / 1e6:,.0f} MB moved at "
            f"{IO_BYTES_PER_S / 1e6:,.0f} MB/s, {IO_RATE_SOURCE}: {self.io_seconds:.1f} s; the math, one tensor "
            f"of each kind merged here: {self.math_seconds:.1f} s)",
        ]
        if self.disk is not None:
            lines.append(self.disk.line())
        return "\n".join(lines + [f"warning: {w}" for w in self.warnings])


def _sample_of(tensor: TensorPlan) -> tuple[TensorPlan, float]:
    """The tensor to time for `tensor`, and how many times its time counts: a large one is
    timed on its first SAMPLE_ELEMENTS, the math's time being linear in the elements."""
    if tensor.numel <= SAMPLE_ELEMENTS:
        return tensor, 1.0

    def cut(entry: TensorEntry) -> TensorEntry:
        return replace(entry, shape=(SAMPLE_ELEMENTS,), nbytes=SAMPLE_ELEMENTS * entry.dtype.itemsize)

    return replace(tensor, base=cut(tensor.base), other=cut(tensor.other), shape=(SAMPLE_ELEMENTS,)), tensor.numel / SAMPLE_ELEMENTS


class _RandomValues:
    """A Feed's reader that hands out random values instead of a parent's bytes."""

    def __init__(self) -> None:
        self.closing = threading.Event()
        self._pools: dict[tuple, torch.Tensor] = {}

    def view(self, entry: TensorEntry, start: int, stop: int) -> torch.Tensor:
        key = (entry.dtype, entry.file.parent)  # one pool per parent: the two must differ, as real parents do
        pool = self._pools.get(key)
        if pool is None or pool.numel() < stop - start:
            generator = torch.Generator().manual_seed(len(self._pools))
            values = (torch.randn(stop - start, generator=generator) if entry.dtype.is_floating_point
                      else torch.randint(0, 2, (stop - start,), generator=generator))
            pool = self._pools[key] = values.to(entry.dtype)
        return pool[:stop - start]

    def close(self) -> None:
        self._pools.clear()


class _DiscardingWriter:
    def __init__(self) -> None:
        self._block = torch.empty(CHUNK_ELEMENTS * 8, dtype=torch.uint8)

    def buffer(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        return self._block[: numel * dtype.itemsize].view(dtype) if numel <= CHUNK_ELEMENTS else torch.empty(numel, dtype=dtype)

    def write(self, chunk: torch.Tensor) -> int:
        return chunk.numel() * chunk.element_size()


def dry_run(config: MergeConfig, max_ram: int = DEFAULT_MAX_RAM, output_parent: Path | None = None,
            policy: AccessPolicy | None = None) -> PlanSummary:
    """The plan of `config`, its output going under `output_parent` (the working folder by
    default); `policy`: public mode's limits, which the plan names when they refuse it."""
    base, other = load_parents(config, fetch=False)
    plan = plan_merge(config, base, other)
    kinds: dict[tuple, list[TensorPlan]] = {}
    for tensor in plan.tensors:
        key = (tensor.shape, tensor.base.dtype, tensor.compute_dtype, tensor.out_dtype, tensor.blends, tensor.same_bytes)
        kinds.setdefault(key, []).append(tensor)
    # (tensor, how many it stands for): a kind's first member warms up (fresh buffers and
    # page faults are not multiplied), its last is timed.
    samples = [(_sample_of(m[0])[0], 0.0) for m in kinds.values() if len(m) > 1]
    samples += [(sample, len(m) * scale) for m in kinds.values() for sample, scale in [_sample_of(m[-1])]]
    math_seconds = 0.0
    writer = _DiscardingWriter()
    # The reader runs ahead, as in a merge; its reads are left out of the math's time.
    with single_threaded_math(), Feed([t for t, _ in samples], max_ram, reader=_RandomValues()) as feed:
        for tensor, count in samples:
            started, waited = time.perf_counter(), feed.waited
            merge_tensor(tensor, writer, feed)
            math_seconds += (time.perf_counter() - started - (feed.waited - waited)) * count  # the reads count as IO
    slots = slots_for(max_ram)
    jobs = [job_for(t, slots) for t in plan.tensors]
    read, reread = sum(j.numel * j.pair_itemsize for j in jobs), sum(j.reread_bytes for j in jobs)
    parents = parents_nbytes(base, other)
    io_seconds = (read + reread + plan.output_bytes) / IO_BYTES_PER_S
    warnings = list(plan.warnings)
    disk = disk_needs(pending_of(base, other), parents, output_parent or Path.cwd(), plan.output_bytes)
    for check in [disk.check] + ([lambda: policy.check_sizes(parents, plan.output_bytes)] if policy else []):
        try:
            check()
        except UserError as exc:
            warnings.append(f"the merge will refuse: {exc}")
    if "lm_head.weight" not in base.tensors:
        warnings.append("tied embeddings: no lm_head tensor; the merged model ties them too")
    if plan.num_layers != base.num_layers:
        warnings.append(f"sub-slice: the output has {plan.num_layers} of the base's {base.num_layers} layers")
    return PlanSummary(len(plan.tensors), sum(1 for t in plan.tensors if t.blends), plan.num_layers, parents, plan.output_bytes,
                       working_set_bytes(plan, max_ram), max(math_seconds, io_seconds),
                       plan.output_bytes / max(math_seconds, 1e-6), warnings, max_ram,
                       sum(1 for j in jobs if j.blend and j.kept == j.blocks), read, reread, math_seconds, io_seconds, disk)
