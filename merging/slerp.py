"""SLERP with mergekit 0.1.5 semantics, split so that huge tensors can be streamed.

mergekit flattens both tensors, normalizes copies (only where the L2 norm > eps), takes
dot = <n0, n1>, falls back to lerp when |dot| > 0.9995, else mixes the *unnormalized*
tensors with s0 = sin(θ0 - θt)/sin θ0, s1 = sin θt / sin θ0, θt = t·θ0.

The only global quantities are three sums (|v0|², |v1|², <v0, v1>), so the work is:
`PairStats` accumulated over chunks -> `coefficients` (two scalars) -> `combine` per
chunk. Memory is then bounded by the chunk size, not the tensor size.

The math runs where its inputs are: the merge moves each chunk to `math_device` (CPU by
default; `cuda` on request). Only the three sums can differ between devices (a GPU adds in
another order), by float32 rounding, so outputs agree within one bf16 ulp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from core.errors import UserError

DOT_THRESHOLD = 0.9995
EPS = 1e-8


@dataclass
class PairStats:
    """Running sums over float32 values; accumulated in float64 so a 100M-element
    embedding does not lose precision in the sum."""

    sq0: float = 0.0
    sq1: float = 0.0
    dot: float = 0.0

    def add(self, v0: torch.Tensor, v1: torch.Tensor) -> None:
        a, b = v0.reshape(-1).float(), v1.reshape(-1).float()
        sums = torch.stack([torch.dot(a, a), torch.dot(b, b), torch.dot(a, b)]).double()
        self.include(*sums.tolist())

    def include(self, sq0: float, sq1: float, dot: float) -> None:
        """Sums taken elsewhere (merging/slerp_kernel.py)."""
        self.sq0 += sq0
        self.sq1 += sq1
        self.dot += dot


@dataclass(frozen=True)
class Coefficients:
    s0: float
    s1: float
    theta_degrees: float  # angle between the parents: where t matters
    lerp: bool  # True when the parents are near-parallel (|cos| > 0.9995)


def coefficients(stats: PairStats, t: float) -> Coefficients:
    n0, n1 = math.sqrt(stats.sq0), math.sqrt(stats.sq1)
    # mergekit normalizes each copy only when its norm exceeds eps.
    cos = stats.dot / (n0 if n0 > EPS else 1.0) / (n1 if n1 > EPS else 1.0)
    theta_degrees = math.degrees(math.acos(max(-1.0, min(1.0, cos))))
    if abs(cos) > DOT_THRESHOLD:
        return Coefficients(1.0 - t, t, theta_degrees, lerp=True)
    theta0 = math.acos(cos)
    sin_theta0 = math.sin(theta0)
    theta_t = theta0 * t
    return Coefficients(math.sin(theta0 - theta_t) / sin_theta0, math.sin(theta_t) / sin_theta0, theta_degrees, lerp=False)


def combine(c: Coefficients, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """s0·v0 + s1·v1 in float32, in new memory (see combine_into)."""
    return combine_into(c, v0.to(torch.float32, copy=True), v1.to(torch.float32, copy=True))


def combine_into(c: Coefficients, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """s0·a + s1·b for two float32 tensors, computed in their own memory (both may be
    overwritten; the result is one of them): the streaming merge reuses its buffers.
    Exact parents are returned bit-exact: t=0 gives a, t=1 gives b, and identical chunks
    give themselves (lerp of x with x is x)."""
    if c.s1 == 0.0 and c.s0 == 1.0:
        return a
    if c.s0 == 0.0 and c.s1 == 1.0:
        return b
    if c.lerp and torch.equal(a, b):
        return a
    # Two products then a sum, as mergekit does (no fused multiply-add): exact opposites cancel to 0.
    return a.mul_(c.s0).add_(b.mul_(c.s1))


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor) -> torch.Tensor:
    """Whole-tensor SLERP (float32 result); the streaming merge uses the pieces above."""
    stats = PairStats()
    stats.add(v0, v1)
    return combine(coefficients(stats, t), v0, v1)


def math_device(name: str | None) -> torch.device:
    """The device for the SLERP math: `cpu` (default) or a CUDA device when one is there.
    Opt-in: a 7B merge read cold from disk already ran at the IO floor on the CPU, and each
    chunk has to travel to the GPU and back (benchmarks/slerp_device.py times both)."""
    try:
        device = torch.device(name or "cpu")
    except RuntimeError:  # not a device torch knows
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UserError("device", f"'{name}' is not a device the merge runs on", "use cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("device", "CUDA is not available on this machine", "leave the device at cpu")
    return device
