"""Weight-only int8, FP8 (e4m3) and bf16 matmuls on CPU for decode-sized batches.

Decoding reads every weight once per token, so these are matrix-vector products bound by
how fast the weights stream in. Small C kernels (csrc/gemv.c, compiled with the system C
compiler together with csrc/decode_step.c for this CPU's instruction-set target, AVX2 or
AVX-512, and cached: core/native.py) read the weight bytes once, widen them in registers
and accumulate in float32, one output row per iteration, both cores on the rows. A kernel
runs a shape only where it measured faster than torch's path for that shape on this
machine (`kernel_wins`), so no host decodes slower for having a compiler (figures per
host class: docs/benchmarks.md):
- int8: torch's `_weight_int8pack_mm` widens well below the memory's speed at batch 1.
  With AVX512-VNNI the kernel rounds the activations to int16 per block of 256 and
  multiplies 32 weights per instruction (tests bound the rounding).
- FP8: CPUs have no FP8 arithmetic and torch's float8 -> bf16 cast is slower than the
  matmul itself, so each byte becomes the float16 with the same exponent and mantissa
  bits, which F16C converts 8 or 16 at a time.
- bf16 (used by the lean decode loop, decoder.py): the same loop widening bf16 by a shift.
Activations and outputs are bf16 (the compute dtype of every quantized model here), so no
conversion runs in torch around the call. A prompt (WIDEN_MIN_ROWS rows or more) shares one
widening of each block of weights (one pass in C, csrc/widen.c, scales folded in) among
all its rows and runs torch's GEMM (`_widened`), so int8 and FP8 prefill within a few
percent of bf16 (the widening's pass): in bf16 where the CPU has native bf16, in float32
elsewhere, where torch emulates bf16 and its bf16 GEMM ran 7x slower than float32 (18
against 130-155 GFLOPS, AVX2 host), so a bf16 model's prompt is widened to float32 there
too. Without a compiler, or for other dtypes, int8 goes through `_weight_int8pack_mm` and
FP8 is widened the same way.
SLERP_ARENA_KERNELS=torch turns the kernels off (core/native.py).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from core.cpu import native_bf16
from core.native import BF16_HEADER, SIMD_HEADER, build, faster
from inference.sharing import kernel_threads

KERNEL_MAX_ROWS = 16  # a decode step's batch (inference/scheduler.py); a prompt's rows go to torch's GEMM
WIDEN_MIN_ROWS = 32  # rows from which widening pays: at 16 rows _weight_int8pack_mm still won (0.85 ms against 1.00, AVX2)
WIDEN_BLOCK = 2048  # output rows widened at a time: a 7B MLP's weights widened at once would take ~235 MB

# One library, in this order, after the shared bf16 conversions and vector helpers.
SOURCES = [BF16_HEADER, SIMD_HEADER,
           *(Path(__file__).parent / "csrc" / name for name in ("gemv.c", "widen.c", "decode_step.c", "kept_attention.c"))]

_kernel_lock = threading.Lock()
_kernel: ctypes.CDLL | None | bool = None  # None: not tried yet, False: unavailable
_choices: dict[tuple, bool] = {}  # what ran, at what shape -> the kernel measured faster than torch here
_choices_lock = threading.RLock()  # a step measured in torch measures its products first


def build_library(target: str | None = "") -> ctypes.CDLL | None:
    """Build (or find in the cache) and load the library for `target` (core/native.py; ""
    for this CPU's); None where it cannot be built."""
    lib = build("cpu", SOURCES, ["-fopenmp"], target)
    if lib is None:
        return None
    for function in (lib.int8_gemv, lib.fp8_gemv, lib.bf16_gemv):
        function.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 4
        function.restype = None
    for function in (lib.int8_widen, lib.fp8_widen):
        function.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int] * 4
        function.restype = None
    lib.kept_attention.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_int]
    lib.kept_attention.restype = None
    lib.decode_batch.argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int] * 2 + [ctypes.c_void_p] * 5 + [ctypes.c_int]
    lib.decode_batch.restype = None
    return lib


def kernel() -> ctypes.CDLL | None:
    global _kernel
    if _kernel is None:  # the lock only until the first load: this runs for every matmul of every token
        with _kernel_lock:
            if _kernel is None:
                _kernel = build_library() or False
    return _kernel or None


def _wide(kind: str, weight: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, float]:
    """bf16, int8 or e4m3 weights in `dtype`, exactly, and the factor their values are off by.
    On the CPU, whose float8 cast is slow, an e4m3 byte becomes the float16 with the same
    exponent and mantissa bits, as the C kernel does: its value times 2^-8 (NaN, which
    the quantizer never stores, would read 480). A GPU casts float8 natively."""
    if kind != "fp8" or weight.device.type != "cpu":
        return weight.to(dtype), 1.0
    # Sign-extended to int16 and shifted by 7, a byte's sign lands on the float16 sign bit
    # and also on bit 14, which the mask clears; in place, 6x faster than assembling the bits.
    bits = weight.view(torch.int8).to(torch.int16)
    bits.bitwise_left_shift_(7).bitwise_and_(-16512)  # 0xBF80
    return bits.view(torch.float16).to(dtype), 256.0


def gemm_dtype(flat: torch.Tensor) -> torch.dtype:
    """What a prompt-sized product of these activations computes in: float32 for bf16 on
    a CPU without native bf16; their own dtype elsewhere."""
    emulated = flat.dtype == torch.bfloat16 and flat.device.type == "cpu" and not native_bf16()
    return torch.float32 if emulated else flat.dtype


def _scaled_wide(kind: str, block: torch.Tensor, scale: torch.Tensor, compute: torch.dtype) -> torch.Tensor:
    """int8 or e4m3 rows times their scales in `compute`, rounded once: in one pass in C
    (csrc/widen.c) where the library is built, in torch's passes otherwise (the same bits)."""
    lib = kernel()
    if lib is not None and compute in (torch.float32, torch.bfloat16) and block.device.type == "cpu" and (
            scale.dtype == {"int8": torch.bfloat16, "fp8": torch.float32}[kind]):
        w, s, wide = block.contiguous(), scale.contiguous(), torch.empty(block.shape, dtype=compute)
        function = lib.int8_widen if kind == "int8" else lib.fp8_widen
        function(w.data_ptr(), s.data_ptr(), wide.data_ptr(), *block.shape, compute == torch.bfloat16, kernel_threads())
        return wide
    # Scales already in the GEMM's dtype (int8's bf16 ones, on a CPU with native bf16) scale
    # the copy in that dtype, as a product of two bf16 values rounds once either way; others
    # in float32 (a bf16 copy scaled in place by float32 scales took twice the GEMM's time).
    scaled_in = compute if scale.dtype == compute else torch.float32
    wide, factor = _wide(kind, block, scaled_in)
    return wide.mul_((scale.to(scaled_in) * factor)[:, None]).to(compute)


def _widened(kind: str, parts: list[torch.Tensor], weight: torch.Tensor, scale: torch.Tensor | None) -> list[torch.Tensor]:
    """part @ (weight * scale).T for each part, through torch's GEMM (`gemm_dtype`), the
    weights widened WIDEN_BLOCK output rows at a time: the parts' rows share each widening,
    so the product costs what a bf16 model's does, and each part gets the GEMM of its own
    rows, which it would get alone; the results in the parts' dtype."""
    compute = gemm_dtype(parts[0])
    xs = [part.to(compute) for part in parts]
    blocks: list[list[torch.Tensor]] = [[] for _ in parts]
    for start in range(0, weight.shape[0], WIDEN_BLOCK):
        block = weight[start:start + WIDEN_BLOCK]
        # The scales folded into the widened copy: a pass over its rows x in, not over the
        # prompt's rows x out. At 1,000 rows a SmolLM2 MLP projection took 6.1 ms in bf16
        # scaled afterwards, 2.2 folded and 2.1 in a bf16 model (AVX-512 with native bf16);
        # 3-25% less in float32 on AVX2.
        wide = _wide(kind, block, compute)[0] if scale is None else _scaled_wide(kind, block, scale[start:start + len(block)], compute)
        for x, out in zip(xs, blocks, strict=True):
            out.append(F.linear(x, wide))
    # One block is the usual case (2,048 rows): returned as it is, not copied into a result.
    return [(out[0] if len(out) == 1 else torch.cat(out, dim=-1)).to(part.dtype) for out, part in zip(blocks, parts, strict=True)]


def _widens(kind: str, flat: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether torch's path for these rows is the widened GEMM (`_widened`)."""
    if kind == "fp8":
        return True
    many = flat.shape[0] >= WIDEN_MIN_ROWS and weight.device.type == "cpu"
    if kind == "bf16":
        return many and gemm_dtype(flat) != flat.dtype
    # torch has no public int8 weight-only matmul; where its private op is gone, the widened product is the same.
    return many or not hasattr(torch, "_weight_int8pack_mm")


def _paths(kind: str, flat: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None) -> tuple[Callable, Callable]:
    """The product flat @ weight.T (times the row scales) through the kernel, and through torch."""
    lib = kernel()
    in_c = {"bf16": lambda: _call(lib.bf16_gemv, flat, weight, None), "int8": lambda: _call(lib.int8_gemv, flat, weight, scale),
            "fp8": lambda: _call(lib.fp8_gemv, flat, weight, scale.float())}[kind]
    if _widens(kind, flat, weight):
        return in_c, lambda: _widened(kind, [flat], weight, scale)[0]
    if kind == "int8":
        return in_c, lambda: torch._weight_int8pack_mm(flat, weight, scale)
    return in_c, lambda: F.linear(flat, weight)


def kernel_wins(key: tuple, in_c: Callable[[], object], in_torch: Callable[[], object]) -> bool:
    """Whether the C path of `key` (what runs, at what shape) is faster than torch's on this
    machine: measured the first time the key comes (core.native.faster), then remembered
    for the process."""
    choice = _choices.get(key)
    if choice is None:
        with _choices_lock:  # one measurement at a time: two at once would each time the other's load
            choice = _choices.get(key)
            if choice is None:
                choice = _choices[key] = faster(in_c, in_torch)
    return choice


def _in_c(kind: str, flat: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None) -> bool:
    """Whether the kernel computes these rows: a decode-sized bf16 batch on the CPU, a library
    built, and the kernel measured faster than torch for one row of this weight here. One
    row decides for every batch up to KERNEL_MAX_ROWS: the kernel computes each row as if
    alone, so a reply's tokens do not depend on how many others decode in the same step."""
    applies = flat.dtype == torch.bfloat16 and weight.device.type == "cpu" and flat.shape[0] <= KERNEL_MAX_ROWS
    return bool(applies and kernel() and kernel_wins((kind, 1, *weight.shape), *_paths(kind, flat[:1], weight, scale)))


def _product(kind: str, flat: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None,
             sizes: list[int] | None = None) -> torch.Tensor:
    """The product ("bf16", "int8" or "fp8" weights) in C where the kernel applies
    (`_in_c`), in torch otherwise. `sizes`: flat's rows are several prompts' (decoder.prefill),
    and each prompt's rows come out as they would alone, whatever the others' lengths
    (torch's GEMM may sum in another order for another row count, and a path is chosen
    by rows): the prompts that widen share each widening, the others run on their own."""
    parts = [flat] if sizes is None else list(flat.split(sizes))
    if len(parts) == 1:
        in_c, in_torch = _paths(kind, flat, weight, scale)
        return in_c() if _in_c(kind, flat, weight, scale) else in_torch()
    out: list[torch.Tensor | None] = [None] * len(parts)
    in_c = [i for i, part in enumerate(parts) if _in_c(kind, part, weight, scale)]
    if in_c:  # one call: the kernel computes each row as if alone
        rows = torch.cat([parts[i] for i in in_c])
        for i, product in zip(in_c, _paths(kind, rows, weight, scale)[0]().split([len(parts[i]) for i in in_c]), strict=True):
            out[i] = product
    shared = [i for i, part in enumerate(parts) if out[i] is None and _widens(kind, part, weight)]
    for i, product in zip(shared, _widened(kind, [parts[i] for i in shared], weight, scale) if shared else [], strict=True):
        out[i] = product
    return torch.cat([_paths(kind, part, weight, scale)[1]() if product is None else product
                      for part, product in zip(parts, out, strict=True)])


def _call(function, flat: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    # Every buffer C reads is bound to a name until the call returns: a temporary's
    # data_ptr() would be freed before C reads it.
    x, w, s = flat.contiguous(), weight.contiguous(), None if scale is None else scale.contiguous()
    y = torch.empty(flat.shape[0], weight.shape[0], dtype=torch.bfloat16)
    function(x.data_ptr(), w.data_ptr(), None if s is None else s.data_ptr(), y.data_ptr(), flat.shape[0], weight.shape[1],
             weight.shape[0], kernel_threads())
    return y


def bf16_linear_cpu(flat: torch.Tensor, weight: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """flat [rows, in] @ weight.T for bf16 weights [out, in] (no bias); `sizes` as in `_product`."""
    return _product("bf16", flat, weight, None, sizes) if weight.dtype == torch.bfloat16 else F.linear(flat, weight)


def int8_linear_cpu(flat: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """flat [rows, in] @ (int8 weight [out, in] * scale [out]).T, scale in flat's dtype; `sizes` as in `_product`."""
    return _product("int8", flat, weight, scale, sizes)


class _FP8LinearCPU:
    @property
    def backend(self) -> str:
        return ("fp8 weight-only, fused C kernel for decode, torch GEMM on widened weights for prefill (CPU)" if kernel()
                else "fp8 weight-only, torch GEMM on widened weights (CPU)")

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
        out_features, in_features = weight.shape
        return _product("fp8", x.reshape(-1, in_features), weight, scale, sizes).reshape(*x.shape[:-1], out_features)


fp8_linear_cpu = _FP8LinearCPU()
