"""Plan a merge: every output tensor, where its two inputs live, and its t.

Positions follow mergekit: layer i of a slice with n layers sits at x = i/(n-1)
(x = 1 when n = 1), counted within the slice; tensors outside the layers (embeddings,
final norm, lm_head) sit at x = 0. A gradient [g0 … gk] is read by linear
interpolation at x·k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from core.architectures import family_of
from core.checkpoints import TensorEntry
from core.errors import UserError
from merging.checkpoint import Checkpoint
from merging.config import MergeConfig, Slice, Source, TRule

TORCH_DTYPE = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def gradient_value(gradient: tuple[float, ...], x: float) -> float:
    scaled = x * (len(gradient) - 1)
    i0 = int(scaled)
    i1 = min(len(gradient) - 1, i0 + 1)
    frac = scaled - i0
    return (1 - frac) * gradient[i0] + frac * gradient[i1]


def layer_position(index_in_slice: int, slice_layers: int) -> float:
    return index_in_slice / (slice_layers - 1) if slice_layers > 1 else 1.0


def rule_for(rules: tuple[TRule, ...], tensor_name: str) -> TRule | None:
    return next((r for r in rules if r.filter is None or r.filter in tensor_name), None)


def t_for(rules: tuple[TRule, ...], tensor_name: str, x: float) -> float:
    rule = rule_for(rules, tensor_name)
    if rule is None:
        raise UserError("parameters.t", f"no entry matches tensor '{tensor_name}'",
                         "add a catch-all entry without `filter`, e.g. `- value: 0.5`")
    return gradient_value(rule.value, x)


def t_curve(rules: tuple[TRule, ...], tensor_name: str, num_layers: int) -> list[float]:
    """t per layer for a tensor name (e.g. 'self_attn'), one slice over all layers."""
    return [t_for(rules, tensor_name, layer_position(i, num_layers)) for i in range(num_layers)]


@dataclass(frozen=True)
class TensorPlan:
    name: str  # output name
    base: TensorEntry
    other: TensorEntry
    t: float
    layer: int | None  # output layer index; None for embeddings / norm / lm_head
    shape: tuple[int, ...]  # output shape (rows may be truncated for vocab tensors)
    compute_dtype: torch.dtype  # `dtype`: parents are cast to it on load, the result back to it
    out_dtype: torch.dtype

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def same_bytes(self) -> bool:
        """Both parents point at the very same stored tensor (a model merged with itself)."""
        return self.base.file == self.other.file and self.base.start == self.other.start

    @property
    def blends(self) -> bool:
        return self.compute_dtype.is_floating_point and not self.same_bytes and 0.0 < self.t < 1.0


@dataclass
class MergePlan:
    base: Checkpoint
    other: Checkpoint
    tensors: list[TensorPlan]
    base_layer_of_output: list[int]  # output layer -> base layer (for per-layer config lists)
    vocab_size: int | None  # set when vocab tensors were truncated
    warnings: list[str] = field(default_factory=list)

    @property
    def num_layers(self) -> int:
        return len(self.base_layer_of_output)

    @property
    def output_bytes(self) -> int:
        return sum(t.numel * t.out_dtype.itemsize for t in self.tensors)


def plan_merge(config: MergeConfig, base: Checkpoint, other: Checkpoint) -> MergePlan:
    check_compatible(base, other)
    if config.slices is None and base.num_layers != other.num_layers:
        raise UserError("models", f"the parents have {base.num_layers} and {other.num_layers} layers",
                         "use `slices` with equal-length layer_range for both")
    arch = base.architecture
    slices = config.slices or (Slice(Source(config.base_model), Source(config.other_model)),)
    warnings: list[str] = list(config.warnings)

    by_layer: dict[int, list[str]] = {}
    outside_layers: list[str] = []
    for name in base.tensors:
        layer = arch.layer_of(name)
        (by_layer.setdefault(layer, []) if layer is not None else outside_layers).append(name)

    planner = _TensorPlanner(config, base, other, warnings)
    layer_plans: list[TensorPlan] = []
    base_layer_of_output: list[int] = []
    for index, piece in enumerate(slices):
        base_start, base_end = _layer_range(piece.base, base, f"slices[{index}].sources (base)")
        other_start, _ = _layer_range(piece.other, other, f"slices[{index}].sources (other)")
        rules = piece.t_rules or config.t_rules
        n = base_end - base_start
        for i in range(n):
            out_layer = len(base_layer_of_output)
            x = layer_position(i, n)
            for name in by_layer.get(base_start + i, []):
                out_name = arch.rename_layer(name, out_layer)
                other_name = arch.rename_layer(name, other_start + i)
                layer_plans.append(planner.plan(out_name, name, other_name, t_for(rules, out_name, x), out_layer))
            base_layer_of_output.append(base_start + i)

    # Embeddings first and the rest (final norm, lm_head) last, the order HF checkpoints use.
    embed = arch.vocab_tensors[0]
    first = [planner.plan(n, n, n, t_for(config.t_rules, n, 0.0), None) for n in outside_layers if n == embed]
    last = [planner.plan(n, n, n, t_for(config.t_rules, n, 0.0), None) for n in outside_layers if n != embed]
    return MergePlan(base, other, first + layer_plans + last, base_layer_of_output, planner.vocab_size, warnings)


class _TensorPlanner:
    def __init__(self, config: MergeConfig, base: Checkpoint, other: Checkpoint, warnings: list[str]):
        self.config, self.base, self.other, self.warnings = config, base, other, warnings
        self.vocab_size: int | None = None

    def plan(self, out_name: str, base_name: str, other_name: str, t: float, layer: int | None) -> TensorPlan:
        b, o = self.base.entry(base_name), self.other.entry(other_name)
        shape = b.shape
        if b.shape != o.shape:
            shape = self._vocab_shape(base_name, b.shape, o.shape)
        compute = TORCH_DTYPE[self.config.dtype] if self.config.dtype and b.dtype.is_floating_point else b.dtype
        out = TORCH_DTYPE[self.config.out_dtype] if self.config.out_dtype and b.dtype.is_floating_point else compute
        return TensorPlan(out_name, b, o, t, layer, shape, compute, out)

    def _vocab_shape(self, name: str, base_shape: tuple[int, ...], other_shape: tuple[int, ...]) -> tuple[int, ...]:
        vocab_tensor = name in self.base.architecture.vocab_tensors
        if not vocab_tensor or len(base_shape) != len(other_shape) or base_shape[1:] != other_shape[1:]:
            raise UserError("models", f"tensor '{name}' has shape {list(base_shape)} in base_model and "
                             f"{list(other_shape)} in the other", "merge two models of the same architecture and size")
        rows = min(base_shape[0], other_shape[0])
        if self.vocab_size is None:
            self.warnings.append(f"vocab sizes differ ({base_shape[0]} vs {other_shape[0]}): "
                                 f"embeddings truncated to the {rows} common rows")
        self.vocab_size = rows
        return (rows, *base_shape[1:])


def _layer_range(source: Source, checkpoint: Checkpoint, where: str) -> tuple[int, int]:
    total = checkpoint.num_layers
    if source.layer_range is None:
        return 0, total
    start, end = source.layer_range
    if end > total:
        raise UserError(f"{where}.layer_range", f"[{start}, {end}] exceeds the {total} layers of '{source.model}'",
                         f"use an end of at most {total}")
    return start, end


@dataclass(frozen=True)
class Incompatibility:
    text: str
    fatal: bool  # True: no merge is possible; False: the merge adapts (and says how)


def incompatibilities(base: dict, other: dict) -> list[Incompatibility]:
    """What stands between two parents' config.json, fatal problems first. The one rule
    behind both the app's parent check and the merge's refusal."""
    found = [Incompatibility(f"{key} differs: {base.get(key)} (base_model) vs {other.get(key)} (other)", fatal=True)
             for key in ("model_type", "hidden_size") if base.get(key) != other.get(key)]
    layers_key = family_of(base.get("model_type")).num_layers_key
    if base.get(layers_key) != other.get(layers_key):
        found.append(Incompatibility(f"layer counts differ ({base.get(layers_key)} vs {other.get(layers_key)}): "
                                     "set a layer range of equal length", fatal=False))
    if base.get("vocab_size") != other.get("vocab_size"):
        rows = min(int(base.get("vocab_size") or 0), int(other.get("vocab_size") or 0))
        found.append(Incompatibility(f"vocab sizes differ ({base.get('vocab_size')} vs {other.get('vocab_size')}): "
                                     f"embeddings will be truncated to {rows} rows", fatal=False))
    return found


def check_compatible(base: Checkpoint, other: Checkpoint) -> None:
    for problem in incompatibilities(base.config, other.config):
        if problem.fatal:
            raise UserError("models", problem.text, "merge two models of the same architecture and size")
