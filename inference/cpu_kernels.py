"""Weight-only int8, FP8 (e4m3) and bf16 matmuls on CPU for decode-sized batches.

Decoding reads every weight once per token, so these are matrix-vector products bound by
how fast the weights stream in. Small C kernels (csrc/gemv.c, compiled with the system C
compiler on first use together with csrc/decode_step.c, cached per CPU) read the weight
bytes once, widen them in registers and accumulate in float32, one output row per
iteration, both cores on the rows:
- int8: torch's `_weight_int8pack_mm` widened at 27 GB/s where the machine reads at
  62 GB/s (2 cores, measured on a 134 MB matrix); over SmolLM2's 121 int8 matmuls per token
  the kernel takes 3.5 ms against 5.3 ms. With AVX512-VNNI it rounds the activations to
  int16 per block of 256 and multiplies 32 weights per instruction: 43 GB/s on Qwen2.5-0.5B's
  136 MB int8 lm_head, 3.1 ms against 6.8 ms for the bf16 one (tests bound the rounding).
- FP8: CPUs have no FP8 arithmetic and torch's float8 -> bf16 cast costs ~2 ns per element
  (1.8 ms for a 1536x576 weight that a bf16 linear multiplies in 0.06 ms). On AVX-512 each
  byte becomes the float16 with the same exponent and mantissa bits, which the CPU converts
  16 at a time: SmolLM2's matmuls take 4.0 ms per token.
- bf16 (used by the lean decode loop, decoder.py): the same loop widening bf16 by a shift;
  SmolLM2 bf16 went from 55 to 106 tok/s with it.
Activations and outputs are bf16 (the compute dtype of every quantized model here), so no
conversion runs in torch around the call. Without a compiler, for other dtypes, or for
prefill-sized batches (where one widening is shared by many rows and torch's GEMM wins),
int8 goes through `_weight_int8pack_mm` and FP8 through a 256-entry lookup table.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from core.native import BF16_HEADER, build

KERNEL_MAX_ROWS = 8  # above this, widening once and using torch's GEMM is faster

# One library, in this order, after the shared bf16 conversions.
SOURCES = [BF16_HEADER, *(Path(__file__).parent / "csrc" / name for name in ("gemv.c", "decode_step.c"))]

_LOOKUP = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).to(torch.float32)
_kernel_lock = threading.Lock()
_kernel: ctypes.CDLL | None | bool = None  # None: not tried yet, False: unavailable


def _load_kernel() -> ctypes.CDLL | bool:
    lib = build("cpu", SOURCES, ["-fopenmp"])
    if lib is None:
        return False
    for function in (lib.int8_gemv, lib.fp8_gemv, lib.bf16_gemv):
        function.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 4
        function.restype = None
    return lib


def kernel() -> ctypes.CDLL | None:
    global _kernel
    if _kernel is None:  # the lock only until the first load: this runs for every matmul of every token
        with _kernel_lock:
            if _kernel is None:
                _kernel = _load_kernel()
    return _kernel or None


def decode_fp8(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if weight.device.type != "cpu":
        # A GPU casts float8 natively and exactly (every e4m3 value is a bf16 value); the
        # table lives on the CPU, and indexing it with GPU indices is an error.
        return weight.to(dtype)
    return _LOOKUP.to(dtype)[weight.view(torch.uint8).int()]


def _kernel_for(flat: torch.Tensor, weight: torch.Tensor) -> ctypes.CDLL | None:
    if flat.dtype != torch.bfloat16 or weight.device.type != "cpu" or flat.shape[0] > KERNEL_MAX_ROWS:
        return None
    return kernel()


_generations = 0  # replies decoding now, in this process
_generations_lock = threading.Lock()


@contextlib.contextmanager
def sharing_cores() -> Iterator[None]:
    """Count a reply as decoding while inside: concurrent replies split the cores (below)."""
    global _generations
    with _generations_lock:
        _generations += 1
    try:
        yield
    finally:
        with _generations_lock:
            _generations -= 1


def kernel_threads() -> int:
    """Cores per kernel call: all of torch's threads for one reply, a share of them when
    several decode at once. Three panes each asking for both cores put 6 OpenMP threads
    on 2 cores, spinning at every barrier."""
    return max(1, torch.get_num_threads() // max(1, _generations))


def _call(function, flat: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    # Every buffer C reads is bound to a name until the call returns: a temporary's
    # data_ptr() would be freed before C reads it.
    x, w, s = flat.contiguous(), weight.contiguous(), None if scale is None else scale.contiguous()
    y = torch.empty(flat.shape[0], weight.shape[0], dtype=torch.bfloat16)
    function(x.data_ptr(), w.data_ptr(), None if s is None else s.data_ptr(), y.data_ptr(), flat.shape[0], weight.shape[1],
             weight.shape[0], kernel_threads())
    return y


def bf16_linear_cpu(flat: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """flat [rows, in] @ weight.T for bf16 weights [out, in] (no bias)."""
    lib = _kernel_for(flat, weight) if weight.dtype == torch.bfloat16 else None
    return _call(lib.bf16_gemv, flat, weight, None) if lib else F.linear(flat, weight)


def int8_linear_cpu(flat: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """flat [rows, in] @ (int8 weight [out, in] * scale [out]).T, scale in flat's dtype."""
    lib = _kernel_for(flat, weight)
    return _call(lib.int8_gemv, flat, weight, scale) if lib else torch._weight_int8pack_mm(flat, weight, scale)


class _FP8LinearCPU:
    @property
    def backend(self) -> str:
        return "fp8 weight-only, fused C kernel (CPU)" if kernel() else "fp8 weight-only, lookup-table decode (CPU)"

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        out_features, in_features = weight.shape
        flat = x.reshape(-1, in_features)
        lib = _kernel_for(flat, weight)
        if lib is None:
            y = F.linear(flat, decode_fp8(weight, flat.dtype)) * scale.to(flat.dtype)
        else:
            y = _call(lib.fp8_gemv, flat, weight, scale.float())
        return y.reshape(*x.shape[:-1], out_features)


fp8_linear_cpu = _FP8LinearCPU()
