"""Weight-only int8, FP8 (e4m3) and bf16 matmuls on CPU for decode-sized batches.

Decoding reads every weight once per token, so these are matrix-vector products bound by
how fast the weights stream in. Two small C kernels (compiled with the system C compiler
on first use, cached per CPU) read the weight bytes once, widen them in registers and
accumulate in float32, one output row per iteration, both cores on the rows:
- int8: torch's `_weight_int8pack_mm` widened at 27 GB/s where the machine reads at
  62 GB/s (2 cores, measured on a 134 MB matrix); over SmolLM2's 121 int8 matmuls per token
  the kernel takes 3.5 ms against 5.3 ms, with bit-identical bf16 outputs.
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
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F

from core.sources import cache_root

KERNEL_MAX_ROWS = 8  # above this, widening once and using torch's GEMM is faster

C_SOURCE = r"""
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef __AVX512F__
#include <immintrin.h>
#endif

static inline float bf16_to_float(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint16_t float_to_bf16(float f) {  /* round to nearest even, as torch does */
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return (uint16_t)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

/* e4m3fn byte -> float without float denormals (slow on x86): normal numbers are rebuilt
   by moving exponent and mantissa into float32 position and adding the bias difference
   (127 - 7); subnormals (exponent 0) are m * 2^-9. */
static inline float fp8_e4m3_to_float(uint8_t b) {
    uint32_t em = b & 0x7Fu;
    uint32_t bits = ((uint32_t)(b & 0x80u) << 24) | ((em << 20) + (120u << 23));
    float normal;
    memcpy(&normal, &bits, sizeof normal);
    float sub = (float)em * 0.001953125f * ((b & 0x80u) ? -1.0f : 1.0f);
    return (em >> 3) ? normal : sub;
}

static float dot_int8(const float *x, const int8_t *w, int n) {
    float acc = 0.0f;
    int i = 0;
#ifdef __AVX512F__
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        __m512 w0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(w + i))));
        __m512 w1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(w + i + 16))));
        a0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + i + 16), a1);
    }
    acc = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
#endif
    for (; i < n; i++) acc += (float)w[i] * x[i];
    return acc;
}

/* sum x[i] * e4m3(w[i]) / 256: on AVX-512 each byte becomes the float16 with the same
   exponent and mantissa bits (e4m3's bias 7 vs float16's 15 is the 2^8; subnormals map to
   subnormals), and the CPU converts 16 of those to float at once. */
static float dot_fp8_over_256(const float *x, const uint8_t *w, int n) {
    float acc = 0.0f;
    int i = 0;
#ifdef __AVX512F__
    const __m256i sign = _mm256_set1_epi16(0x80), rest = _mm256_set1_epi16(0x7F);
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        __m256i b0 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(w + i)));
        __m256i b1 = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(w + i + 16)));
        __m256i h0 = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(b0, sign), 8), _mm256_slli_epi16(_mm256_and_si256(b0, rest), 7));
        __m256i h1 = _mm256_or_si256(_mm256_slli_epi16(_mm256_and_si256(b1, sign), 8), _mm256_slli_epi16(_mm256_and_si256(b1, rest), 7));
        a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(h0), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_cvtph_ps(h1), _mm512_loadu_ps(x + i + 16), a1);
    }
    acc = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
#endif
    for (; i < n; i++) acc += fp8_e4m3_to_float(w[i]) * 0.00390625f * x[i];
    return acc;
}

static float dot_bf16(const float *x, const uint16_t *w, int n) {
    float acc = 0.0f;
    int i = 0;
#ifdef __AVX512F__
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        __m512 w0 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + i))), 16));
        __m512 w1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + i + 16))), 16));
        a0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + i + 16), a1);
    }
    acc = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
#endif
    for (; i < n; i++) acc += bf16_to_float(w[i]) * x[i];
    return acc;
}

static float *rows_to_float(const uint16_t *x, long n) {
    float *xf = malloc(n * sizeof *xf);
    for (long i = 0; i < n; i++) xf[i] = bf16_to_float(x[i]);
    return xf;
}

/* y[m, o] = bf16(scale[o] * sum_i x[m, i] * w[o, i])   x: rows x in (bf16), w: out x in;
   `threads` cores share the output rows. */
void int8_gemv(const uint16_t *x, const int8_t *w, const uint16_t *scale, uint16_t *y, int rows, int in, int out, int threads) {
    float *xf = rows_to_float(x, (long)rows * in);
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int o = 0; o < out; o++)
        for (int m = 0; m < rows; m++)
            y[(long)m * out + o] = float_to_bf16(dot_int8(xf + (long)m * in, w + (long)o * in, in) * bf16_to_float(scale[o]));
    free(xf);
}

void fp8_gemv(const uint16_t *x, const uint8_t *w, const float *scale, uint16_t *y, int rows, int in, int out, int threads) {
    float *xf = rows_to_float(x, (long)rows * in);
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int o = 0; o < out; o++)
        for (int m = 0; m < rows; m++)
            y[(long)m * out + o] = float_to_bf16(dot_fp8_over_256(xf + (long)m * in, w + (long)o * in, in) * 256.0f * scale[o]);
    free(xf);
}

/* bf16 weights: no scale (the argument is ignored). */
void bf16_gemv(const uint16_t *x, const uint16_t *w, const void *scale, uint16_t *y, int rows, int in, int out, int threads) {
    float *xf = rows_to_float(x, (long)rows * in);
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int o = 0; o < out; o++)
        for (int m = 0; m < rows; m++)
            y[(long)m * out + o] = float_to_bf16(dot_bf16(xf + (long)m * in, w + (long)o * in, in));
    free(xf);
}
"""

_LOOKUP = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).to(torch.float32)
_kernel_lock = threading.Lock()
_kernel: ctypes.CDLL | None | bool = None  # None: not tried yet, False: unavailable


def _cpu_id() -> str:
    try:
        return next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def _load_kernel() -> ctypes.CDLL | bool:
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None or platform.system() != "Linux":
        return False
    key = hashlib.sha256(f"{C_SOURCE}|{_cpu_id()}|{platform.machine()}".encode()).hexdigest()[:16]
    library = cache_root() / "kernels" / f"gemv-{key}.so"
    if not library.is_file():
        library.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=library.parent) as work:
            source, built = Path(work) / "gemv.c", Path(work) / "gemv.so"
            source.write_text(C_SOURCE)
            flags = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]
            done = subprocess.run([compiler, *flags, str(source), "-o", str(built)], capture_output=True)
            if done.returncode != 0:
                return False
            built.rename(library)  # atomic: concurrent builders never see a half-written file
    lib = ctypes.CDLL(str(library))
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
