"""FP8 (e4m3) weight-only matmul on CPU.

CPUs have no FP8 arithmetic, and torch's float8 -> bf16 cast costs ~2 ns per element
(measured: 1.8 ms to upcast a 1536x576 weight that a bf16 linear multiplies in 0.06 ms),
so decoding whole weights at every token would make FP8 several times slower than bf16.
For decode-sized batches we therefore call a ~40-line C kernel that reads the FP8 bytes
once, decodes them in registers and accumulates in float32; it is compiled with the
system C compiler on first use and cached. Without a compiler (or for prefill-sized
batches, where one decode is shared by many rows) weights are decoded through a
256-entry lookup table and multiplied by torch.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch
import torch.nn.functional as F

from core.sources import cache_root

KERNEL_MAX_ROWS = 8  # above this, decoding once and using torch's GEMM is faster

C_SOURCE = r"""
#include <stdint.h>
#include <string.h>

/* e4m3fn byte -> float without touching float denormals (slow on x86): normal numbers
   are rebuilt by moving exponent and mantissa into float32 position and adding the
   bias difference (127 - 7); subnormals (exponent 0) are m * 2^-9. */
static inline float fp8_e4m3_to_float(uint8_t b) {
    uint32_t em = b & 0x7Fu;
    uint32_t bits = ((uint32_t)(b & 0x80u) << 24) | ((em << 20) + (120u << 23));
    float normal;
    memcpy(&normal, &bits, sizeof normal);
    float sub = (float)em * 0.001953125f * ((b & 0x80u) ? -1.0f : 1.0f);
    return (em >> 3) ? normal : sub;
}

/* y[m, o] = scale[o] * sum_i x[m, i] * w[o, i]   (x: rows x in, w: out x in) */
void fp8_gemv(const float *x, const uint8_t *w, const float *scale, float *y, int rows, int in, int out) {
    #pragma omp parallel for schedule(static)
    for (int o = 0; o < out; o++) {
        float decoded[in];
        const uint8_t *wrow = w + (long)o * in;
        #pragma omp simd
        for (int i = 0; i < in; i++) decoded[i] = fp8_e4m3_to_float(wrow[i]);
        for (int m = 0; m < rows; m++) {
            const float *xrow = x + (long)m * in;
            float acc = 0.0f;
            #pragma omp simd reduction(+:acc)
            for (int i = 0; i < in; i++) acc += decoded[i] * xrow[i];
            y[(long)m * out + o] = acc * scale[o];
        }
    }
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
    library = cache_root() / "kernels" / f"fp8_gemv-{key}.so"
    if not library.is_file():
        library.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=library.parent) as work:
            source, built = Path(work) / "fp8_gemv.c", Path(work) / "fp8_gemv.so"
            source.write_text(C_SOURCE)
            flags = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]
            done = subprocess.run([compiler, *flags, str(source), "-o", str(built)], capture_output=True)
            if done.returncode != 0:
                return False
            built.rename(library)  # atomic: concurrent builders never see a half-written file
    lib = ctypes.CDLL(str(library))
    lib.fp8_gemv.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 3
    lib.fp8_gemv.restype = None
    return lib


def kernel() -> ctypes.CDLL | None:
    global _kernel
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


class _FP8LinearCPU:
    @property
    def backend(self) -> str:
        return "fp8 weight-only, fused C kernel (CPU)" if kernel() else "fp8 weight-only, lookup-table decode (CPU)"

    def __call__(self, x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        out_features, in_features = weight.shape
        flat = x.reshape(-1, in_features)
        lib = kernel() if weight.device.type == "cpu" else None
        if lib is None or flat.shape[0] > KERNEL_MAX_ROWS:
            y = F.linear(flat, decode_fp8(weight, flat.dtype)) * scale.to(flat.dtype)
        else:
            # Every buffer C reads is bound to a name until the call returns: a temporary's
            # data_ptr() (e.g. of scale.float()) would be freed before C reads it.
            xf = flat.float().contiguous()
            scale32 = scale.float().contiguous()
            w = weight.contiguous()
            y32 = torch.empty(flat.shape[0], out_features, dtype=torch.float32)
            lib.fp8_gemv(xf.data_ptr(), w.data_ptr(), scale32.data_ptr(), y32.data_ptr(), flat.shape[0], in_features, out_features)
            y = y32.to(x.dtype)
        return y.reshape(*x.shape[:-1], out_features)


fp8_linear_cpu = _FP8LinearCPU()
