"""The SLERP passes in C (csrc/slerp.c) for the common case: bf16 parents, bf16 output,
math on the CPU. Per 1M-element piece the torch version widened both halves into float32
scratch, took three dot products, then widened again, multiplied, added and narrowed: a
dozen passes over memory, which made a 7B merge CPU-bound on one core (27-32 s of user
time, about the whole run). Here each pass reads the bf16 pair once.

Sums are taken in float32 per block of 4096 and added in float64, where torch's dot
summed each piece in float32 in its own order; outputs stay within one bf16 ulp of
mergekit's (tests/test_merge.py), and t = 0 / 1 and identical pieces stay bit-exact (the
merge copies those, as before)."""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import torch

from core.native import BF16_HEADER, build

_lock = threading.Lock()
_lib: ctypes.CDLL | None | bool = None  # None: not tried yet, False: unavailable


def kernel() -> ctypes.CDLL | None:
    global _lib
    if _lib is None:
        with _lock:
            if _lib is None:
                lib = build("slerp", [BF16_HEADER, Path(__file__).parent / "csrc" / "slerp.c"], ["-ffp-contract=off"])
                if lib is not None:
                    lib.slerp_sums.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p]
                    lib.slerp_combine.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long, ctypes.c_float, ctypes.c_float,
                                                  ctypes.c_void_p]
                _lib = lib or False
    return _lib or None


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
