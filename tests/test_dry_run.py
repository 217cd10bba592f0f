"""The plan's peak RAM against a real merge's measured peak: in a child process that has
imported everything the merge needs, the peak RSS is reset (/proc/self/clear_refs), the
merge runs, and the growth of the peak over the RSS before it is the merge's own working
set. (Two processes, one merging and one only importing, differed by 220 vs 278 MB of
baseline from one machine to another: too noisy to subtract.)"""

import subprocess
import sys
from pathlib import Path

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from merge_bench import SMOL_CONFIG, synthetic_model  # noqa: E402

from merging import parse_config  # noqa: E402
from merging.dry_run import dry_run  # noqa: E402

CHILD = """
import re, sys
import torch  # noqa: F401
from merging import load_config, run_merge

def status(key):
    return int(re.search(key + r":\\s+(\\d+)", open("/proc/self/status").read())[1]) / 1024

config = load_config(sys.argv[1])
before = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
run_merge(config, sys.argv[2])
print(status("VmHWM") - before)
"""


def merge_working_set_mb(config: Path, out: Path) -> float:
    done = subprocess.run([sys.executable, "-c", CHILD, str(config), str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.split()[-1])


def test_planned_peak_ram_is_the_merges_own_working_set(tmp_path: Path):
    # Tiny but not trivial: 84 MB per parent, tensors of 1-8M elements (several chunks each).
    a = synthetic_model(tmp_path / "a", 2, hidden=1024, intermediate=2816, vocab=8000, seed=1)
    b = synthetic_model(tmp_path / "b", 2, hidden=1024, intermediate=2816, vocab=8000, seed=2)
    config = tmp_path / "merge.yml"
    config.write_text(SMOL_CONFIG.replace("[0, 30]", "[0, 2]").format(a=a, b=b))
    # One run's peak depends on how far the writer thread lags behind (44-88 MB measured for
    # this pair across runs and machines), so the plan is compared with the median of five.
    # Within 25% on this machine; 50% here, so that a loaded CI machine does not fail it.
    runs = sorted(merge_working_set_mb(config, tmp_path / f"out{i}") for i in range(5))
    planned = dry_run(parse_config(config.read_text())).peak_ram_bytes / 2**20
    print(f"planned {planned:.1f} MB, measured {runs} MB")
    assert abs(planned - runs[2]) <= 0.5 * runs[2], (planned, runs)
