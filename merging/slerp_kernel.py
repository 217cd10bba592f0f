"""The SLERP passes in C (csrc/slerp.c) for the common case: bf16 parents, bf16 output,
math on the CPU. Per 1M-element piece the torch version widened both halves into float32
scratch, took three dot products, then widened again, multiplied, added and narrowed: a
dozen passes over memory, which made a 7B merge CPU-bound on one core (27-32 s of user
time, about the whole run). Here each pass reads the bf16 pair once.

Sums are taken in float32 per block of 4096 and added in float64, where torch's dot
summed each piece in float32 in its own order; outputs stay within one bf16 ulp of
mergekit's (tests/test_merge.py), and t = 0 / 1 and identical pieces stay bit-exact (the
merge copies those, as before). The library is built for this CPU's target, AVX2 or
AVX-512 (core/native.py), and used only where it measured faster than the torch passes
(once per process)."""

from __future__ import annotations

import ctypes
import sys
import threading
from pathlib import Path

import torch

from core.native import BF16_HEADER, SIMD_HEADER, build, faster
from merging.slerp import PairStats, coefficients, combine_into

_lock = threading.Lock()
_lib: ctypes.CDLL | None | bool = None  # None: not tried yet, False: unavailable


def build_library(target: str | None = "") -> ctypes.CDLL | None:
    """Build (or find in the cache) and load the library for `target` (core/native.py; ""
    for this CPU's); None where it cannot be built."""
    lib = build("slerp", [BF16_HEADER, SIMD_HEADER, Path(__file__).parent / "csrc" / "slerp.c"], ["-ffp-contract=off"], target)
    if lib is not None:
        lib.slerp_sums.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p]
        lib.slerp_combine.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_float, ctypes.c_float,
                                      ctypes.c_void_p]
    return lib


def kernel() -> ctypes.CDLL | None:
    global _lib
    if _lib is None:
        with _lock:
            if _lib is None:
                lib = build_library()
                _lib = lib if lib is not None and _faster_than_torch(lib) else False
    return _lib or None


def _faster_than_torch(lib: ctypes.CDLL) -> bool:
    """Both passes over a 64k-element pair (small: its few MB count in the merge's peak
    RAM), in C and as the torch path runs them."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(2**16, generator=generator).bfloat16() for _ in range(2))
    out, sums = torch.empty_like(a), (ctypes.c_double * 3)()
    fa, fb = torch.empty(a.numel()), torch.empty(a.numel())

    def in_c() -> None:
        lib.slerp_sums(a.data_ptr(), b.data_ptr(), a.numel(), sums)
        lib.slerp_combine(a.data_ptr(), b.data_ptr(), a.numel(), 0.6, 0.5, out.data_ptr())

    def in_torch() -> None:
        stats = PairStats()
        stats.add(fa.copy_(a), fb.copy_(b))
        out.copy_(combine_into(coefficients(stats, 0.5), fa.copy_(a), fb.copy_(b)))

    if faster(in_c, in_torch):
        return True
    print("warning: the C merge math measured slower than torch's on this CPU; torch runs instead", file=sys.stderr)
    return False


def applies(parents: tuple[torch.dtype, ...], compute_dtype: torch.dtype, out_dtype: torch.dtype, device: torch.device | None) -> bool:
    """Whether the C passes compute what the torch ones do for this tensor: bf16 in, math
    in float32 after a cast that changes nothing, bf16 out, on the CPU."""
    return (all(d == torch.bfloat16 for d in parents) and compute_dtype in (torch.bfloat16, torch.float32)
            and out_dtype == torch.bfloat16 and (device is None or device.type == "cpu") and kernel() is not None)


def sums(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    """(a.a, b.b, a.b) of two contiguous bf16 vectors."""
    out = (ctypes.c_double * 3)()
    kernel().slerp_sums(a.data_ptr(), b.data_ptr(), a.numel(), out)
    return out[0], out[1], out[2]


def combine(a: torch.Tensor, b: torch.Tensor, s0: float, s1: float, out: torch.Tensor) -> None:
    """out (bf16) <- s0 * a + s1 * b, the products and sum rounded to float32."""
    kernel().slerp_combine(a.data_ptr(), b.data_ptr(), a.numel(), s0, s1, out.data_ptr())
