"""Dry run: what a merge will cost, without writing anything.

Time is estimated from the real merge code, measured here and now: one tensor of every
kind in the plan (shape, dtypes, blended or copied) goes through merge_tensor with a
writer that discards the bytes, and each kind's time is multiplied by how often it occurs.
Peak RAM is the merge's own working set (merge.working_set_bytes), not the RSS of the
process that asks: in the app that process also holds the chat models.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from merging.config import MergeConfig
from merging.merge import load_parents, merge_tensor, working_set_bytes
from merging.planning import TensorPlan, plan_merge


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
            f"estimated peak RAM: {self.peak_ram_bytes / 1e6:,.0f} MB of working set (flat in model size; the process "
            "running the merge adds its own, about 220 MB for `python -m merging`)",
            f"estimated time: {self.seconds_estimate:.1f} s (one tensor of each kind merged here: "
            f"{self.measured_bytes_per_s / 1e6:,.0f} MB/s)",
        ]
        return "\n".join(lines + [f"warning: {w}" for w in self.warnings])


class _DiscardingWriter:
    def write(self, chunk: torch.Tensor) -> int:
        return chunk.numel() * chunk.element_size()


def dry_run(config: MergeConfig) -> PlanSummary:
    base, other = load_parents(config)
    plan = plan_merge(config, base, other)
    kinds: dict[tuple, list[TensorPlan]] = {}
    for tensor in plan.tensors:
        key = (tensor.shape, tensor.base.dtype, tensor.compute_dtype, tensor.out_dtype, tensor.blends, tensor.same_bytes)
        kinds.setdefault(key, []).append(tensor)
    seconds = 0.0
    for members in kinds.values():
        if len(members) > 1:  # warm-up: a first call's costs (fresh buffers, page faults) are not multiplied
            merge_tensor(members[0], _DiscardingWriter())
        started = time.perf_counter()
        merge_tensor(members[-1], _DiscardingWriter())
        seconds += (time.perf_counter() - started) * len(members)
    rate = plan.output_bytes / max(seconds, 1e-6)
    warnings = list(plan.warnings)
    if "lm_head.weight" not in base.tensors:
        warnings.append("tied embeddings: no lm_head tensor; the merged model ties them too")
    if plan.num_layers != base.num_layers:
        warnings.append(f"sub-slice: the output has {plan.num_layers} of the base's {base.num_layers} layers")
    parents = base.nbytes + (other.nbytes if other is not base else 0)
    return PlanSummary(len(plan.tensors), sum(1 for t in plan.tensors if t.blends), plan.num_layers, parents, plan.output_bytes,
                       working_set_bytes(plan), seconds, rate, warnings)
