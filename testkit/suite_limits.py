"""A pytest plugin (tests/conftest.py loads it) for runs on a machine nobody watches, CI's.
- The summary says what the machine had: instruction sets, cores, memory, free disk.
- A disk too full for a run stops it before the first test, saying so, instead of failing
  every test that writes a model, a merge or a download.
- A run that goes on past SUITE_DEADLINE_S stops after the test it is in, with its summary
  printed and a failing exit: CI kills the whole job at 90 minutes, and a killed run
  printed only its dots, no test's name and no reason.
A test that hangs is pytest-timeout's (pyproject.toml): it fails with every thread's stack."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

# Well past a whole run on 2 cores (docs/benchmarks.md, "The test suite"), and short of CI's
# 90 minutes less the install and the kernels' second pass.
SUITE_DEADLINE_S = float(os.environ.get("SLERP_ARENA_SUITE_DEADLINE_S", 65 * 60))
# Above what a whole run wrote at its peak on a fresh machine (models, merges, downloads, the
# fresh build, Chromium's profiles), beside an installed venv (docs/benchmarks.md).
SUITE_DISK_GIB = float(os.environ.get("SLERP_ARENA_SUITE_DISK_GIB", 5.0))
_STARTED = pytest.StashKey[float]()


def _memory_gib() -> tuple[float, float]:
    """(total, available) from /proc/meminfo; (0, 0) where there is none."""
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    except OSError:
        return 0.0, 0.0
    return tuple(int(fields.get(key, "0 kB").split()[0]) / 2**20 for key in ("MemTotal", "MemAvailable"))


def machine_line() -> str:
    """The host as a figure's caption needs it, and what a run could run short of."""
    from core.cpu import describe_cpu

    total, available = _memory_gib()
    disks = {path: shutil.disk_usage(path).free / 2**30 for path in {tempfile.gettempdir(), str(Path.home())}}
    free = ", ".join(f"{path} {gib:.1f} GiB free" for path, gib in sorted(disks.items()))
    return f"machine: {describe_cpu()}; {os.cpu_count()} cores; memory {total:.1f} GiB, {available:.1f} available; disk: {free}"


def pytest_terminal_summary(terminalreporter) -> None:
    """At the end, where CI's shortened log still shows it (-q leaves out the header)."""
    terminalreporter.write_line(machine_line())


def pytest_sessionstart(session: pytest.Session) -> None:
    session.stash[_STARTED] = time.monotonic()
    free = shutil.disk_usage(tempfile.gettempdir()).free / 2**30
    if free < SUITE_DISK_GIB and not session.config.option.collectonly:
        pytest.exit(f"{tempfile.gettempdir()} has {free:.1f} GiB free and a run writes up to {SUITE_DISK_GIB:.0f}: free some space "
                    f"(or point TMPDIR elsewhere) and run again; {machine_line()}", returncode=1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    yield
    elapsed = time.monotonic() - item.session.stash[_STARTED]
    if nextitem is not None and elapsed > SUITE_DEADLINE_S and not item.session.shouldfail:
        item.session.shouldfail = (f"the run passed {SUITE_DEADLINE_S / 60:.0f} minutes ({elapsed / 60:.0f}) and stopped before "
                                   f"{nextitem.nodeid}; {machine_line()}")
