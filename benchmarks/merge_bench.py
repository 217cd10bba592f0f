"""Merge speed and memory, measured side by side in one run.

1. SmolLM2-135M pair: parent A is the bundled GGUF (converted once, cached), parent B
   is A plus a seeded perturbation. The merge runs as `python -m merging` in a child
   process, so wall time and peak RSS are whole-process figures (imports included),
   compared with the IO floor: reading both parents and writing one output's bytes.
2. Synthetic pairs of about 0.35 GB and 1 GB each: peak RSS must not grow with size.

Each pair also prints the dry run's estimates (`--dry-run`, the app's Plan) beside the
measured figures: time against the merge's wall, peak RAM against the peak minus a child
that only imports the merge code.

Run: `make bench` (or `python benchmarks/merge_bench.py [--smollm2-only]`). Prints a table;
asserts nothing. Optional: MERGEKIT_PYTHON=/path/to/python-with-mergekit-0.1.5 compares
mergekit in the same run.

A Mistral-7B-shaped pair against mergekit, warm and cold: benchmarks/merge_at_size.py.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import torch

from core.cpu import describe_cpu
from core.native import chosen_target
from core.sources import cache_root, resolve_model
from merging import parse_config, run_merge
from merging.dry_run import dry_run
from testkit.measure import io_floor, run_measured
from testkit.pairs import SEED_CONFIG, SMOL_CONFIG, folder_bytes, perturbed_copy, synthetic_model


def bench_pair(label: str, a: Path, b: Path, config_text: str, work: Path) -> float:
    config = work / (label.replace(" ", "-") + ".yml")
    config.write_text(config_text.format(a=a, b=b))
    out = work / (label.replace(" ", "-") + "-merged")
    cmd = ["merging", str(config), str(out), "--overwrite"]
    run_measured(cmd)  # warm the page cache, as the IO floor below also reads from it
    # Interleaved, best of three each: disk writeback from one run slows the next.
    walls, rss_peaks, floors = [], [], []
    for _ in range(3):
        wall, rss = run_measured(cmd)
        walls.append(wall)
        rss_peaks.append(rss)
        floors.append(io_floor([a, b], folder_bytes(out), work / "floor.bin")[0])
    wall, rss, floor = min(walls), max(rss_peaks), min(floors)
    imports, imports_rss = run_measured(["-c", "import torch, merging.merge, merging.__main__"])
    print(f"{label:<22} parents {folder_bytes(a) / 1e6:7.0f} MB  merge wall {wall:5.2f} s  peak RSS {rss:6.0f} MB  "
          f"| IO floor {floor:5.2f} s  merge/floor {wall / floor:5.1f}x  (imports alone: {imports:.2f} s, {imports_rss:.0f} MB RSS)")
    parsed = parse_config(config.read_text())
    plan = dry_run(parsed)
    merged = run_merge(parsed, out, overwrite=True)  # in this process: the merge's own time, without start-up and imports
    print(f"{'':<22} dry run: estimated {plan.seconds_estimate:5.2f} s vs {merged.seconds:5.2f} s merging in-process "
          f"({merged.seconds / plan.seconds_estimate:.1f}x) and {wall:5.2f} s CLI wall with imports; "
          f"estimated peak {plan.peak_ram_bytes / 2**20:4.0f} MB vs measured {rss - imports_rss:4.0f} MB above the imports")
    return wall


def bench_mergekit(python: str, a: Path, b: Path, work: Path) -> float:
    """The same SmolLM2 merge with mergekit-yaml, in the same run, and how far apart the
    two outputs are (in bf16 units of the last place)."""
    from safetensors.torch import load_file

    config = work / "mergekit.yml"
    config.write_text(SMOL_CONFIG.format(a=a, b=b))
    out = work / "mergekit-merged"
    run = f"import sys; sys.argv = ['mergekit-yaml', {str(config)!r}, {str(out)!r}]; from mergekit.scripts.run_yaml import main; main()"
    walls, peaks = [], []
    for _ in range(2):
        shutil.rmtree(out, ignore_errors=True)
        wall, rss = run_measured(["-c", run], python=python)
        walls.append(wall)
        peaks.append(rss)
    ours, theirs = load_file(work / "SmolLM2-135M-pair-merged" / "model.safetensors"), load_file(out / "model.safetensors")
    worst = max((ours[k].float() - theirs[k].float()).abs().max() / theirs[k].float().abs().max() for k in theirs)
    same = sum(int((ours[k] == theirs[k]).sum()) for k in theirs) / sum(t.numel() for t in theirs.values())
    print(f"{'mergekit-yaml 0.1.5':<22} parents {folder_bytes(a) / 1e6:7.0f} MB  merge wall {min(walls):5.2f} s  peak RSS "
          f"{max(peaks):6.0f} MB  | outputs bit-identical: {same:.2%} of elements, largest difference {worst:.1e} of a tensor's max")
    return min(walls)


def main() -> None:
    work = cache_root() / "bench"
    work.mkdir(parents=True, exist_ok=True)
    smol_a = resolve_model("bundled:SmolLM2-135M-Instruct")
    smol_b = perturbed_copy(smol_a, work / "smollm2-perturbed")
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, {describe_cpu()}, C kernels: {chosen_target() or 'off'}")
    if not os.environ.get("MERGEKIT_PYTHON"):
        print("mergekit not compared: set MERGEKIT_PYTHON to a python with mergekit==0.1.5 to measure it in this run")
    ours = bench_pair("SmolLM2-135M pair", smol_a, smol_b, SMOL_CONFIG, work)
    if "--smollm2-only" in sys.argv[1:]:
        return
    if os.environ.get("MERGEKIT_PYTHON"):
        theirs = bench_mergekit(os.environ["MERGEKIT_PYTHON"], smol_a, smol_b, work)
        print(f"{'':<22} mergekit / slerp-arena wall time: {theirs / ours:.1f}x")
    for layers in (2, 7):
        a = synthetic_model(work / f"synthetic-{layers}-a", layers, seed=1)
        b = synthetic_model(work / f"synthetic-{layers}-b", layers, seed=2)
        bench_pair(f"synthetic {layers} layers", a, b, SEED_CONFIG.replace("{n}", str(layers)), work)
        shutil.rmtree(work / f"synthetic-{layers}-layers-merged", ignore_errors=True)


if __name__ == "__main__":
    main()
