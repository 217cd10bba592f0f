"""Divergence map: the angle θ between two parents for every tensor, streamed in chunks
like the merge itself (so a 7B pair is analysed in constant memory).

θ is where SLERP differs from a straight average: near 0° (fine-tuned siblings: well
under 5°) SLERP and a plain average agree, and t still moves the merge from one parent to
the other; near 90° the parents are unrelated and SLERP keeps the norm an average loses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.errors import UserError
from merging.checkpoint import Checkpoint
from merging.planning import check_compatible
from merging.safetensors_io import chunk_ranges, read_elements
from merging.slerp import PairStats, coefficients

CHUNK = 1024 * 1024
# Component of a tensor, by the first pattern its name matches (data, not if-chains).
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("q", r"\.q_proj\."), ("k", r"\.k_proj\."), ("v", r"\.v_proj\."), ("o", r"\.o_proj\."),
    ("gate", r"\.gate_proj\."), ("up", r"\.up_proj\."), ("down", r"\.down_proj\."),
    ("norms", r"norm"), ("embeddings", r"embed_tokens|lm_head"),
)


@dataclass(frozen=True)
class TensorAngle:
    name: str
    layer: int | None
    component: str
    theta_degrees: float


def component_of(name: str) -> str:
    return next((label for label, pattern in COMPONENTS if re.search(pattern, name)), "other")


def divergence(a: Checkpoint, b: Checkpoint, on_progress=None) -> list[TensorAngle]:
    """θ per tensor that both parents hold with the same shape (vocab tensors compare
    their common rows)."""
    check_compatible(a, b)
    arch = a.architecture
    names = [n for n in a.tensors if a.tensors[n].dtype.is_floating_point]
    angles = []
    for done, name in enumerate(names, 1):
        ea, eb = a.tensors[name], b.entry(name)
        if ea.shape[1:] != eb.shape[1:]:
            raise UserError("models", f"tensor '{name}' has shapes {list(ea.shape)} and {list(eb.shape)}",
                             "compare two models of the same architecture and size")
        numel = min(ea.numel, eb.numel)  # vocab tensors: the common rows are a common prefix
        stats = PairStats()
        for start, stop in chunk_ranges(numel, CHUNK):
            stats.add(read_elements(ea, start, stop), read_elements(eb, start, stop))
        angles.append(TensorAngle(name, arch.layer_of(name), component_of(name), coefficients(stats, 0.0).theta_degrees))
        if on_progress is not None:
            on_progress(done, len(names))
    return angles


def divergence_grid(angles: list[TensorAngle]) -> tuple[list[str], list[tuple[str, list[float | None]]]]:
    """(columns, rows) for a heatmap: one row per layer (plus one for the tensors outside
    the layers), one column per component; a cell is the mean θ of its tensors."""
    columns = [label for label, _ in COMPONENTS if any(a.component == label for a in angles)]
    cells: dict[tuple[str, str], list[float]] = {}
    for a in angles:
        row = "outside layers" if a.layer is None else f"layer {a.layer}"
        cells.setdefault((row, a.component), []).append(a.theta_degrees)
    layers = sorted({a.layer for a in angles if a.layer is not None})
    row_names = [f"layer {i}" for i in layers] + (["outside layers"] if any(a.layer is None for a in angles) else [])
    rows = [(r, [sum(v) / len(v) if (v := cells.get((r, c))) else None for c in columns]) for r in row_names]
    return columns, rows


def angles_of_merge(reports) -> list[TensorAngle]:
    """The same map for a finished merge, from its per-tensor report (no re-reading)."""
    return [TensorAngle(r.name, r.layer, component_of(r.name), r.theta_degrees) for r in reports if r.theta_degrees is not None]
