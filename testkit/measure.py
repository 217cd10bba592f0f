"""Whole-process measurements for benchmarks: wall time, CPU time and peak RSS of a child
Python, the IO floor (the bytes a merge must move), and a cold page cache."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from core.places import ROOT

# Peak RSS must come from the child itself: a forked child's ru_maxrss starts at the
# parent's, so wait4() would report this benchmark's own memory. VmHWM is per address
# space and starts afresh at exec; the child prints it on exit.
PEAK_RSS_REPORTER = (
    "import atexit, re, runpy, sys\n"
    "atexit.register(lambda: sys.stderr.write('VmHWM ' + re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1] + '\\n'))\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True) if sys.argv[0] != '-c' else exec(sys.argv[1])\n"
)


def run_measured(args: list[str], python: str = sys.executable) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of `python <args>` in a child process."""
    return run_timed(args, python)[:2]


def run_timed(args: list[str], python: str = sys.executable, env: dict[str, str] | None = None) -> tuple[float, float, float]:
    """Wall seconds, peak RSS (MB) and CPU seconds (user + system) of `python <args>` in a
    child process (`env`: added to this one's). CPU time shows what a run cost where other
    work on the machine stretches its wall time."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([python, "-c", PEAK_RSS_REPORTER, *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    peaks = re.findall(r"^VmHWM (\d+)$", done.stderr, re.MULTILINE)
    if done.returncode != 0 or not peaks:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, int(peaks[-1]) / 1024, cpu


def io_floor(parents: list[Path], output_bytes: int, out: Path) -> tuple[float, float]:
    """Read every parent byte, then write the output's size and fsync: (wall, CPU seconds)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    buffer = bytearray(16 * 2**20)
    for parent in parents:
        for file in sorted(parent.glob("*.safetensors")):
            with open(file, "rb", buffering=0) as fh:
                while fh.readinto(buffer):
                    pass
    view, left = memoryview(buffer), output_bytes
    with open(out, "wb", buffering=0) as sink:
        while left:
            left -= sink.write(view[: min(left, len(buffer))])
        os.fsync(sink.fileno())
    out.unlink()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return time.perf_counter() - started, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def drop_caches(parents: list[Path]) -> str:
    """Empty the page cache of the parents; returns how."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return "drop_caches"
    except OSError:
        for parent in parents:
            for file in parent.glob("*.safetensors"):
                fd = os.open(file, os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                os.close(fd)
        return "fadvise DONTNEED"
