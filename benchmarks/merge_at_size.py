"""Merge at the seeds' real size: a Mistral-7B-shaped pair, the project against mergekit
and the IO floor, warm and cold, in one run.

    python benchmarks/merge_at_size.py --size 7b [--work DIR] [--rounds 3] [--also-max-ram 1GB] [--mergekit-threads 1]

It needs about 45 GB of disk under --work (default: the cache folder).

The pair is random bf16, built in minutes: one pool of random values is generated once
and every tensor is written as a window of it, wrapping around, that starts at an offset
of its own in each model, so the parents differ and are far from parallel (θ ≈ 90°).
Shards of ~5 GB with an index, as on the Hub. The 7B pair takes 29 GB and one output 14.5
GB: outputs are removed after every run.

Runs alternate (project, mergekit, …), three times each by default: the page cache
(smaller than parents plus output on a 24 GB machine) carries over from run to run, so
only alternating runs compare. Each run starts after a sync and its time includes
syncing its own output, so no run pays for another's writes. Each run prints wall time
and the child's peak RSS (VmHWM). The IO floor reads both parents fully, then writes the
output's size and fsyncs. Cold
figures: the page cache is dropped (`echo 3 > /proc/sys/vm/drop_caches`, as root) or,
where that is refused, the parents' pages are evicted file by file
(posix_fadvise DONTNEED) before the run.

mergekit: MERGEKIT_PYTHON names a python with mergekit 0.1.5; without it, the project
and the floor still run, and the line below says how to get one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
from safetensors import safe_open

from core.cpu import describe_cpu
from core.native import chosen_target
from core.sources import cache_root
from merging import load_config
from merging.dry_run import dry_run
from merging.feed import DEFAULT_MAX_RAM, parse_max_ram
from testkit.measure import drop_caches, io_floor, run_timed
from testkit.pairs import SEED_CONFIG, SIZES, build_pair
from testkit.reference import bf16_ulps, reference_gradient, reference_slerp

MERGEKIT_SETUP = ("python3 -m venv /tmp/mkv && /tmp/mkv/bin/pip install torch==2.13.0 mergekit==0.1.5 transformers==5.23.0, "
                  "then MERGEKIT_PYTHON=/tmp/mkv/bin/python")
def check_output(out: Path, a: Path, b: Path, n_layers: int) -> float:
    """Largest distance, in bf16 ulps, from the mergekit transcription (testkit/reference.py)
    on one blended tensor (a middle layer's k_proj)."""
    layer = n_layers // 4
    name = f"model.layers.{layer}.self_attn.k_proj.weight"

    def tensor(folder: Path) -> torch.Tensor:
        for file in sorted(folder.glob("*.safetensors")):
            with safe_open(file, "pt") as fh:
                if name in fh.keys():  # noqa: SIM118 -- a safe_open handle is not a dict
                    return fh.get_tensor(name)
        raise SystemExit(f"{folder} has no {name}")

    v0, v1 = tensor(a).float(), tensor(b).float()
    t = reference_gradient([0, 0.5, 0.3, 0.7, 1], layer / (n_layers - 1))
    expected = torch.from_numpy(reference_slerp(t, v0.numpy(), v1.numpy()))
    return bf16_ulps(tensor(out), expected, float(torch.cat([v0.reshape(-1), v1.reshape(-1)]).abs().max()))


def run_sized(size: str, work: Path, rounds: int = 2, extra_max_ram: str | None = None, mergekit_threads: int | None = None) -> None:
    s = SIZES[size]
    work.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(work).free
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, {describe_cpu()}, C kernels: {chosen_target() or 'off'}, "
          f"{free / 1e9:.0f} GB free under {work}", flush=True)
    a, b = build_pair(work, s)
    config = work / "merge.yml"
    config.write_text(SEED_CONFIG.format(a=a, b=b, n=s.layers))
    out = work / "merged"
    mergekit = os.environ.get("MERGEKIT_PYTHON")
    if not mergekit:
        print(f"mergekit not compared: set it up with `{MERGEKIT_SETUP}`", flush=True)

    plan = dry_run(load_config(config))
    print(f"dry run (default budget): estimated {plan.seconds_estimate:.1f} s (IO {plan.io_seconds:.1f} s, math "
          f"{plan.math_seconds:.1f} s), peak {plan.peak_ram_bytes / 1e6:.0f} MB of working set, "
          f"{plan.reread_bytes / 1e9:.1f} GB read twice", flush=True)
    # name: (python, arguments, environment added)
    contenders = {f"project (--max-ram {DEFAULT_MAX_RAM // 10**6}MB)": (sys.executable, ["merging", str(config), str(out)], {})}
    if extra_max_ram:
        parse_max_ram(extra_max_ram)
        args = ["merging", str(config), str(out), "--max-ram", extra_max_ram]
        contenders[f"project (--max-ram {extra_max_ram})"] = (sys.executable, args, {})
    if mergekit:
        run = f"import sys; sys.argv = ['mergekit-yaml', {str(config)!r}, {str(out)!r}]; from mergekit.scripts.run_yaml import main; main()"
        if mergekit_threads:  # torch's threads stall on a busy machine: this shows mergekit at its best there
            threads = {"OMP_NUM_THREADS": str(mergekit_threads)}
            contenders[f"mergekit 0.1.5 (OMP_NUM_THREADS={mergekit_threads})"] = (mergekit, ["-c", run], threads)
        else:
            contenders["mergekit 0.1.5"] = (mergekit, ["-c", run], {})
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in [*contenders, "IO floor"]}
    cold: dict[str, float] = {}
    output_bytes = plan.output_bytes

    def one(name: str, label: str) -> tuple[float, float]:
        shutil.rmtree(out, ignore_errors=True)
        # Nobody pays for the writes before it: a run started while the build's 29 GB (or
        # the last run's output) was still being written back took 55 s where the next
        # took 24. Each run's own output is made durable inside its time, as the floor's.
        os.sync()
        if name == "IO floor":
            (wall, cpu), rss, note = io_floor([a, b], output_bytes, work / "floor.bin"), 0.0, ""
        else:
            python, args, env = contenders[name]
            wall, rss, cpu = run_timed(args, python=python, env=env)
            synced = time.perf_counter()
            os.sync()
            wall += time.perf_counter() - synced
            note = f"  (output within {check_output(out, a, b, s.layers):.2f} bf16 ulp of the reference)"
            shutil.rmtree(out, ignore_errors=True)
        print(f"  {label:<5} {name:<36} wall {wall:7.1f} s   cpu {cpu:6.1f} s   peak RSS {f'{rss:.0f} MB' if rss else '-':>9}"
              f"   load {os.getloadavg()[0]:.1f}{note}", flush=True)
        return wall, rss

    for r in range(rounds):
        print(f"round {r + 1} (warm: the page cache holds what the runs before left)", flush=True)
        for name in runs:
            runs[name].append(one(name, "warm"))
    for name in runs:
        how = drop_caches([a, b])
        cold[name] = one(name, "cold")[0]
    print(f"cold: the parents' pages were evicted ({how}) before each cold run")
    print_table(runs, cold)


def print_table(runs: dict[str, list[tuple[float, float]]], cold: dict[str, float]) -> None:
    floor = statistics.median(w for w, _ in runs["IO floor"])
    mergekit = min((statistics.median(w for w, _ in v) for k, v in runs.items() if k.startswith("mergekit")), default=None)
    mergekit_cold = min((v for k, v in cold.items() if k.startswith("mergekit")), default=None)  # one mergekit at most
    print(f"\n| {'':<36} | warm runs (s)  | median | cold (s) | peak RSS | / IO floor (warm, cold) | / mergekit (warm, cold) |")
    print(f"|{'-' * 38}|----------------|--------|----------|----------|-------------------------|-------------------------|")
    for name, values in runs.items():
        walls = [w for w, _ in values]
        median = statistics.median(walls)
        rss = max(r for _, r in values)
        vs_floor = f"{median / floor:.2f}x, {cold[name] / cold['IO floor']:.2f}x"
        vs_mergekit = f"{median / mergekit:.2f}x, {cold[name] / mergekit_cold:.2f}x" if mergekit else "-"
        print(f"| {name:<36} | {', '.join(f'{w:.1f}' for w in walls):<14} | {median:6.1f} | {cold[name]:8.1f} | "
              f"{f'{rss:.0f} MB' if rss else '-':>8} | {vs_floor:>23} | {vs_mergekit:>23} |")


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchmarks/merge_at_size.py")
    parser.add_argument("--size", choices=list(SIZES), required=True)
    parser.add_argument("--work", type=Path, default=cache_root() / "bench-sized", help="where the pair is built (kept)")
    parser.add_argument("--rounds", type=int, default=3, help="warm runs of each, alternating (3: one slow run moves no median)")
    parser.add_argument("--also-max-ram", help="also run the project with this --max-ram")
    parser.add_argument("--mergekit-threads", type=int, help="run mergekit with OMP_NUM_THREADS set to this")
    args = parser.parse_args()
    run_sized(args.size, args.work / args.size, args.rounds, args.also_max_ram, args.mergekit_threads)


if __name__ == "__main__":
    main()
