"""What this CPU can do, read once from /proc/cpuinfo: its instruction sets, and whether
bf16 arithmetic is native. Code that picks bf16 for speed asks `native_bf16()`: without
native bf16 (AVX512-BF16 or AMX) torch emulates it, and a bf16 autocast training step ran
23x slower than fp32 on an AVX2 host (docs/benchmarks.md)."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

# The flags that decide which kernels run, in the order they are printed.
SHOWN = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "asimd")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (x86 `flags`, ARM `Features`); empty where unreadable."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return frozenset()
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.cache
def cpu_model() -> str:
    try:
        line = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
        return line.partition(":")[2].strip()
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def native_bf16() -> bool:
    """True where bf16 matmuls run in hardware (AVX512-BF16 or AMX), so bf16 beats fp32."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def describe_cpu() -> str:
    """One line for benchmark output: the model and the instruction sets that matter here."""
    shown = [flag for flag in SHOWN if flag in cpu_flags()]
    return f"{cpu_model()} [{' '.join(shown) or 'no SIMD flags read'}]"
