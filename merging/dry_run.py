"""Dry run: what a merge will cost, without writing anything.

Time is estimated from a throughput measured here and now: the first tensors of the plan
(up to 64 MB of output) go through the real merge code with a writer that discards the
bytes, and the rest is extrapolated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psutil
import torch

from merging.config import MergeConfig
from merging.merge import CHUNK_ELEMENTS, load_parents, merge_tensor
from merging.planning import plan_merge

SAMPLE_BYTES = 64 * 10**6


@dataclass(frozen=True)
class PlanSummary:
    tensors: int
    blended: int
    num_layers: int
    parents_bytes: int
    output_bytes: int
    peak_ram_bytes: int
    seconds_estimate: float
    measured_bytes_per_s: float
    warnings: list[str]

    def describe(self) -> str:
        lines = [
            f"output: {self.tensors} tensors ({self.blended} blended), {self.num_layers} layers, "
            f"{self.output_bytes / 1e6:,.0f} MB on disk (disk needed: {self.output_bytes / 1e6:,.0f} MB + a few kB of metadata)",
            f"parents read: {self.parents_bytes / 1e6:,.0f} MB",
            f"estimated peak RAM: {self.peak_ram_bytes / 1e6:,.0f} MB (does not grow with model size)",
            f"estimated time: {self.seconds_estimate:.1f} s (measured {self.measured_bytes_per_s / 1e6:,.0f} MB/s on a sample here)",
        ]
        return "\n".join(lines + [f"warning: {w}" for w in self.warnings])


class _DiscardingWriter:
    def write(self, chunk: torch.Tensor) -> int:
        return chunk.numel() * chunk.element_size()


def dry_run(config: MergeConfig) -> PlanSummary:
    base, other = load_parents(config)
    plan = plan_merge(config, base, other)
    # Sample from the middle of the plan (decoder layers, most of any model), after one
    # warm-up tensor so first-call costs are not extrapolated to the whole model.
    middle = plan.tensors[len(plan.tensors) // 2:] + plan.tensors[: len(plan.tensors) // 2]
    merge_tensor(middle[0], _DiscardingWriter())
    sample_bytes, started = 0, time.perf_counter()
    for tensor in middle:
        merge_tensor(tensor, _DiscardingWriter())
        sample_bytes += tensor.numel * tensor.out_dtype.itemsize
        if sample_bytes >= SAMPLE_BYTES:
            break
    rate = sample_bytes / max(time.perf_counter() - started, 1e-6)
    # Working set per chunk: two parent reads, their float32 copies, the float32 result
    # and its cast; plus up to three chunks queued for the disk writer.
    working_set = CHUNK_ELEMENTS * (2 * 2 + 2 * 4 + 2 * 4 + 2) + 3 * CHUNK_ELEMENTS * 4
    warnings = list(plan.warnings)
    if "lm_head.weight" not in base.tensors:
        warnings.append("tied embeddings: no lm_head tensor; the merged model ties them too")
    if plan.num_layers != base.num_layers:
        warnings.append(f"sub-slice: the output has {plan.num_layers} of the base's {base.num_layers} layers")
    parents = base.nbytes + (other.nbytes if other is not base else 0)
    return PlanSummary(len(plan.tensors), sum(1 for t in plan.tensors if t.blends), plan.num_layers, parents, plan.output_bytes,
                       psutil.Process().memory_info().rss + working_set, plan.output_bytes / rate, rate, warnings)
