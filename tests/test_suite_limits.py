"""testkit/suite_limits.py: a run past its deadline stops with its summary and fails, and
the summary names the machine."""

import os
import subprocess
import sys

from core.places import ROOT


def run_layout_tests(deadline_s: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_layout.py"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "SLERP_ARENA_SUITE_DEADLINE_S": deadline_s})


def test_a_run_past_its_deadline_stops_after_one_test_fails_and_names_the_machine():
    late = run_layout_tests("0")
    assert late.returncode == 1, late.stdout[-2000:]
    assert "1 passed" in late.stdout and "stopped before tests/test_layout.py::" in late.stdout
    assert "machine: " in late.stdout and "GiB free" in late.stdout
    in_time = run_layout_tests("3600")
    assert in_time.returncode == 0 and "stopped before" not in in_time.stdout, in_time.stdout[-2000:]
