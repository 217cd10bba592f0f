"""An independent transcription of mergekit 0.1.5's SLERP (numpy, float32, whole
tensors), used as the oracle that the streaming torch implementation must match."""

from __future__ import annotations

import numpy as np
import torch


def reference_slerp(t: float, v0: np.ndarray, v1: np.ndarray, dot_threshold: float = 0.9995, eps: float = 1e-8) -> np.ndarray:
    v0 = v0.astype(np.float32)
    v1 = v1.astype(np.float32)
    v0_copy, v1_copy = np.copy(v0), np.copy(v1)
    n0, n1 = np.linalg.norm(v0), np.linalg.norm(v1)
    if n0 > eps:
        v0 = v0 / n0
    if n1 > eps:
        v1 = v1 / n1
    dot = np.sum(v0 * v1)
    if np.abs(dot) > dot_threshold:
        return (1 - t) * v0_copy + t * v1_copy
    theta_0 = np.arccos(dot)
    sin_theta_0 = np.sin(theta_0)
    theta_t = theta_0 * t
    s0 = np.sin(theta_0 - theta_t) / sin_theta_0
    s1 = np.sin(theta_t) / sin_theta_0
    return s0 * v0_copy + s1 * v1_copy


def reference_gradient(values: list[float], x: float) -> float:
    if len(values) == 1:
        return values[0]
    scaled = x * (len(values) - 1)
    lo = int(np.floor(scaled))
    hi = min(len(values) - 1, lo + 1)
    return values[lo] + (scaled - lo) * (values[hi] - values[lo])


def bf16_ulps(ours: torch.Tensor, reference: torch.Tensor, parents_scale: float) -> float:
    """Largest |ours - reference| in bf16 units of the last place at the reference's
    magnitude. Where two nearly opposite parents cancel, the result sits near zero and
    any float32 implementation (mergekit's included) carries rounding noise of about
    2^-23 of the parents' scale; the ulp there is floored at 2^-20 of that scale so that
    noise is not read as a difference of millions of ulps."""
    ours, reference = ours.float(), reference.float()
    if ours.numel() == 0:
        return 0.0
    magnitude = torch.maximum(ours.abs(), reference.abs()).clamp_min(1e-38)
    ulp = torch.clamp_min(2.0 ** (torch.floor(torch.log2(magnitude)) - 7), 2.0**-20 * parents_scale)
    return float(((ours - reference).abs() / ulp).max())
