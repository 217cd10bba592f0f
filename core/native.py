"""C kernels built with the system C compiler and cached, for the decode loop
(inference/cpu_kernels.py) and the merge's math (merging/slerp_kernel.py).

Each library is built for one instruction-set target (TARGETS): "avx512" where the CPU
has AVX-512, "avx2" (AVX2 + FMA + F16C) anywhere those exist; an AVX-512 CPU has both,
so the tests build and check both here. The cache key holds the sources, the flags and
the compiler's predefined macros for them (its version and every instruction set it
targets), so a cache copied from another host, a VM that hides AVX-512, or a compiler
upgrade means a new build, never a library this CPU cannot run. Where nothing can be
built (no compiler, not Linux on x86-64, a CPU without AVX2, a failed or hung build, or
SLERP_ARENA_KERNELS=torch) `build` says None, the reason goes to stderr once, and the
callers use torch: off x86 (ARM) the C kernels have no vector path, and their scalar
loops are slower than torch's."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from core.cpu import cpu_flags
from core.sources import cache_root

CSRC = Path(__file__).parent / "csrc"
BF16_HEADER = CSRC / "bf16.h"  # bf16 <-> float, for the sources of both engines
SIMD_HEADER = CSRC / "simd.h"  # the AVX2 helpers both engines' vector paths share (after bf16.h)
KERNELS_ENV = "SLERP_ARENA_KERNELS"  # "torch": no C kernel; "avx2" / "avx512": that target; unset: this CPU's best
COMPILE_TIMEOUT_S = 300  # a compiler that hangs (a stuck NFS cache, a wedged toolchain) must not hold the app

# target -> (what the CPU must have, as /proc/cpuinfo names it; flags after -march=native)
TARGETS = {
    "avx2": (frozenset({"avx2", "fma", "f16c"}), ["-mno-avx512f"]),
    "avx512": (frozenset({"avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl"}), []),
}
# Predefined macros -> the CPU flag each needs: the library runs only where all of those it was built for are there.
MACRO_FLAGS = {"__AVX2__": "avx2", "__FMA__": "fma", "__F16C__": "f16c", "__AVX512F__": "avx512f", "__AVX512BW__": "avx512bw",
               "__AVX512VL__": "avx512vl", "__AVX512VNNI__": "avx512_vnni", "__AVX512BF16__": "avx512_bf16"}

_said: set[str] = set()
_failed: set[Path] = set()  # libraries whose build failed in this process: not tried again


def _say_once(reason: str) -> None:
    if reason not in _said:
        _said.add(reason)
        print(f"warning: {reason}; torch runs instead", file=sys.stderr, flush=True)


def supported_targets() -> list[str]:
    """The targets this machine can build and run, weakest first (empty off x86-64 Linux)."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        return []
    return [target for target, (needs, _) in TARGETS.items() if needs <= cpu_flags()]


def kernels_off() -> bool:
    return os.environ.get(KERNELS_ENV, "").strip().lower() == "torch"


def chosen_target() -> str | None:
    """SLERP_ARENA_KERNELS's target, else the strongest this CPU runs; None: torch only."""
    wanted = os.environ.get(KERNELS_ENV, "").strip().lower()
    supported = supported_targets()
    if kernels_off():
        return None
    if wanted in TARGETS:
        if wanted in supported:
            return wanted
        _say_once(f"C kernels: {KERNELS_ENV}={wanted}, which this CPU cannot run")
        return None
    if not supported:
        _say_once(f"C kernels: no AVX2 on this {platform.machine()} CPU, and the scalar loops are slower than torch")
        return None
    return supported[-1]


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def _run(command: list[str]) -> tuple[bool, str]:
    """(succeeded, what it printed), with a timeout: a compiler that fails says why."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {COMPILE_TIMEOUT_S} s"
    except OSError as exc:
        return False, str(exc)
    return done.returncode == 0, (done.stdout if done.returncode == 0 else done.stderr.strip()[-2000:])


@functools.cache
def _macros(compiler: str, flags: tuple[str, ...]) -> tuple[bool, str]:
    """The compiler's predefined macros for `flags` (its version and every instruction set
    it targets), or why it refused them."""
    ok, out = _run([compiler, *flags, "-dM", "-E", "-x", "c", os.devnull])
    return ok, "".join(sorted(out.splitlines(keepends=True))) if ok else out


def build(name: str, sources: list[Path], flags: list[str], target: str | None = "") -> ctypes.CDLL | None:
    """`sources` compiled as one file with `flags` (plus -O3 -march=native -shared -fPIC and
    the target's own) for `target` ("" : chosen_target()); None where it cannot be built."""
    target = chosen_target() if target == "" else target
    if target is None:
        return None
    compiler = _compiler()
    if compiler is None:
        _say_once("C kernels: no C compiler (cc or gcc) on the PATH")
        return None
    options = ("-O3", "-march=native", *TARGETS[target][1], *flags)
    ok, macros = _macros(compiler, options)
    if not ok:
        _say_once(f"C kernels: {compiler} rejects {' '.join(options)}: {macros}")
        return None
    missing = {flag for macro, flag in MACRO_FLAGS.items() if f"#define {macro} " in macros} - cpu_flags()
    if missing:  # -march=native read another CPU than /proc/cpuinfo shows: its code could die here
        _say_once(f"C kernels ({target}): the compiler targets {', '.join(sorted(missing))}, which this CPU lacks")
        return None
    code = "\n".join(source.read_text() for source in sources)
    key = hashlib.sha256(f"{code}|{options}|{macros}".encode()).hexdigest()[:16]
    library = cache_root() / "kernels" / f"{name}-{target}-{key}.so"
    if library in _failed:
        return None
    loaded = _load(library) if library.is_file() else None
    if loaded is None:  # not built yet, or a cached file this system cannot load: build it (again)
        library.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=library.parent) as work:
            source, built = Path(work) / f"{name}.c", Path(work) / f"{name}.so"
            source.write_text(code)
            ok, said = _run([compiler, *options, "-shared", "-fPIC", str(source), "-o", str(built), "-lm"])
            if not ok:
                _failed.add(library)
                _say_once(f"C kernel {name} ({target}) failed to build: {said.replace(str(source), source.name)}")
                return None
            built.replace(library)  # atomic: concurrent builders never see a half-written file
        loaded = _load(library)
        if loaded is None:
            _failed.add(library)
            _say_once(f"C kernel {name} ({target}): the built library does not load")
    return loaded


def _load(library: Path) -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(str(library))
    except OSError:  # a truncated or foreign cached file (a copied cache, a full disk mid-write)
        return None


def faster(kernel: Callable[[], object], alternative: Callable[[], object], repeats: int = 5) -> bool:
    """Whether `kernel` runs faster than `alternative` here: both in turn, the best of
    `repeats` rounds each (a neighbour's burst of load falls on one round, not on one
    contender), per call; a round repeats a call too short to time alone, each contender as
    often as its own first (warm) call says."""
    calls = {}
    for run in (kernel, alternative):
        run()
        started = time.perf_counter()
        run()
        calls[run] = max(1, int(2e-3 / max(time.perf_counter() - started, 1e-7)))
    best = {run: float("inf") for run in calls}
    for _ in range(repeats):
        for run, count in calls.items():
            started = time.perf_counter()
            for _ in range(count):
                run()
            best[run] = min(best[run], (time.perf_counter() - started) / count)
    return best[kernel] < best[alternative]
