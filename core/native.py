"""C kernels built with the system C compiler on first use and cached per CPU and source,
for the decode loop (inference/cpu_kernels.py) and the merge's math (merging/slerp_kernel.py).
A cached library that will not load is built again. Without a compiler, off Linux, or
where the build fails, `build` says None and the callers use torch."""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from core.sources import cache_root

BF16_HEADER = Path(__file__).parent / "csrc" / "bf16.h"  # bf16 <-> float, for the sources of both engines


def _cpu_id() -> str:
    try:
        return next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def build(name: str, sources: list[Path], flags: list[str]) -> ctypes.CDLL | None:
    """`sources` compiled as one file with `flags` (plus -O3 -march=native -shared -fPIC)."""
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None or platform.system() != "Linux":
        return None
    code = "\n".join(source.read_text() for source in sources)
    key = hashlib.sha256(f"{code}|{flags}|{_cpu_id()}|{platform.machine()}".encode()).hexdigest()[:16]
    library = cache_root() / "kernels" / f"{name}-{key}.so"
    loaded = _load(library) if library.is_file() else None
    if loaded is None:  # not built yet, or a cached file this system cannot load: build it (again)
        library.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=library.parent) as work:
            source, built = Path(work) / f"{name}.c", Path(work) / f"{name}.so"
            source.write_text(code)
            command = [compiler, "-O3", "-march=native", "-shared", "-fPIC", *flags, str(source), "-o", str(built), "-lm"]
            if subprocess.run(command, capture_output=True).returncode != 0:
                return None
            built.replace(library)  # atomic: concurrent builders never see a half-written file
        loaded = _load(library)
    return loaded


def _load(library: Path) -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(str(library))
    except OSError:  # a truncated or foreign cached file (a copied cache, a full disk mid-write)
        return None
