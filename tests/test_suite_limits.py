"""testkit/suite_limits.py: a run past its deadline stops with its summary and fails, a disk
too full stops it before the first test, and the summary names the machine."""

import os
import subprocess
import sys

from core.places import ROOT


def run_layout_tests(deadline_s: str = "3600", disk_gib: str = "1") -> subprocess.CompletedProcess:
    # The plugin as tests/conftest.py loads it, without the conftest's imports (torch, playwright), most of a run's time.
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--noconftest", "-p", "testkit.suite_limits",
                           "tests/test_layout.py"], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "SLERP_ARENA_SUITE_DEADLINE_S": deadline_s, "SLERP_ARENA_SUITE_DISK_GIB": disk_gib})


def test_a_run_past_its_deadline_stops_after_one_test_fails_and_names_the_machine():
    late = run_layout_tests("0")
    assert late.returncode == 1, late.stdout[-2000:]
    assert "1 passed" in late.stdout and "stopped before tests/test_layout.py::" in late.stdout
    assert "machine: " in late.stdout and "GiB free" in late.stdout
    in_time = run_layout_tests()
    assert in_time.returncode == 0 and "stopped before" not in in_time.stdout, in_time.stdout[-2000:]


def test_a_disk_too_full_for_a_run_stops_it_before_the_first_test_and_says_how_full():
    full = run_layout_tests(disk_gib="1000000")
    assert full.returncode == 1 and "passed" not in full.stdout, full.stdout[-2000:]
    assert "GiB free and a run writes up to 1000000: free some space" in full.stdout + full.stderr
