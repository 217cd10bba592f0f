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
asserts nothing.

`--size 7b` (or 1b, tiny) measures instead a Mistral-7B-shaped pair against mergekit and
the IO floor, warm and cold (benchmarks/real_size.py; needs about 45 GB of disk under
`--work DIR`, default the cache folder; `--rounds N`; `--also-max-ram 1GB` adds a project
run with that budget; `--mergekit-threads 1` runs mergekit with OMP_NUM_THREADS=1).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.sources import cache_root, resolve_model  # noqa: E402
from merging import parse_config, run_merge  # noqa: E402
from merging.dry_run import dry_run  # noqa: E402

# The seed's V-shaped SLERP over {n} layers (real_size.py uses it at 7B).
SEED_CONFIG = """
slices:
  - sources:
      - model: {a}
        layer_range: [0, {n}]
      - model: {b}
        layer_range: [0, {n}]
merge_method: slerp
base_model: {a}
parameters:
  t:
    - filter: self_attn
      value: [0, 0.5, 0.3, 0.7, 1]
    - filter: mlp
      value: [1, 0.5, 0.7, 0.3, 0]
    - value: 0.5
dtype: bfloat16
"""
SMOL_CONFIG = SEED_CONFIG.replace("{n}", "30")


def perturbed_copy(source: Path, target: Path, seed: int = 0, scale: float = 0.05) -> Path:
    """Parent B: every float tensor of A plus seeded noise of `scale` × its std."""
    if (target / "config.json").is_file():
        return target
    from safetensors.torch import load_file

    work = Path(tempfile.mkdtemp(dir=target.parent))
    generator = torch.Generator().manual_seed(seed)
    for file in source.glob("*.safetensors"):
        tensors = load_file(file)
        for name, t in tensors.items():
            noise = torch.randn(t.shape, generator=generator) * float(t.float().std()) * scale
            tensors[name] = (t.float() + noise).to(t.dtype)
        save_file(tensors, work / file.name, metadata={"format": "pt"})
    for other in source.iterdir():
        if other.suffix != ".safetensors":
            shutil.copy(other, work / other.name)
    work.rename(target)
    return target


def synthetic_model(folder: Path, layers: int, hidden: int = 2048, intermediate: int = 5632, vocab: int = 32000, seed: int = 0) -> Path:
    """A Llama-shaped checkpoint with one shard per layer (as real 7B checkpoints are
    sharded), random bf16 weights."""
    if (folder / "config.json").is_file():
        return folder
    work = Path(tempfile.mkdtemp(dir=folder.parent))
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * 0.02).bfloat16()

    weight_map = {}
    shards = [{"model.embed_tokens.weight": rand(vocab, hidden)}]
    for i in range(layers):
        p = f"model.layers.{i}."
        shards.append({p + "self_attn.q_proj.weight": rand(hidden, hidden), p + "self_attn.k_proj.weight": rand(hidden, hidden),
                       p + "self_attn.v_proj.weight": rand(hidden, hidden), p + "self_attn.o_proj.weight": rand(hidden, hidden),
                       p + "mlp.gate_proj.weight": rand(intermediate, hidden), p + "mlp.up_proj.weight": rand(intermediate, hidden),
                       p + "mlp.down_proj.weight": rand(hidden, intermediate), p + "input_layernorm.weight": rand(hidden),
                       p + "post_attention_layernorm.weight": rand(hidden)})
    shards.append({"model.norm.weight": rand(hidden), "lm_head.weight": rand(vocab, hidden)})
    for n, shard in enumerate(shards):
        name = f"model-{n + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, work / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
    (work / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden, "intermediate_size": intermediate,
              "num_hidden_layers": layers, "num_attention_heads": 16, "num_key_value_heads": 16, "vocab_size": vocab, "dtype": "bfloat16"}
    (work / "config.json").write_text(json.dumps(config))
    work.rename(folder)
    return folder


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


def io_floor(parents: list[Path], output_bytes: int, out: Path) -> float:
    """Read every parent byte and write as many bytes as the merge writes."""
    start = time.perf_counter()
    buffer = bytearray(16 * 1024 * 1024)
    view = memoryview(buffer)
    written = 0
    with open(out, "wb") as sink:
        for parent in parents:
            for file in sorted(parent.glob("*.safetensors")):
                with open(file, "rb") as fh:
                    while n := fh.readinto(buffer):
                        if parent is parents[0] and written < output_bytes:
                            sink.write(view[: min(n, output_bytes - written)])
                            written += min(n, output_bytes - written)
    out.unlink()
    return time.perf_counter() - start


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


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
        floors.append(io_floor([a, b], folder_bytes(out), work / "floor.bin"))
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
    args = sys.argv[1:]
    if "--size" in args:
        import argparse

        from real_size import SIZES, run_sized

        parser = argparse.ArgumentParser(prog="benchmarks/merge_bench.py")
        parser.add_argument("--size", choices=list(SIZES), required=True)
        parser.add_argument("--work", type=Path, default=cache_root() / "bench-sized", help="where the pair is built (kept)")
        parser.add_argument("--rounds", type=int, default=3, help="warm runs of each, alternating (3: one slow run moves no median)")
        parser.add_argument("--also-max-ram", help="also run the project with this --max-ram")
        parser.add_argument("--mergekit-threads", type=int, help="run mergekit with OMP_NUM_THREADS set to this")
        parsed = parser.parse_args(args)
        run_sized(parsed.size, parsed.work / parsed.size, parsed.rounds, parsed.also_max_ram, parsed.mergekit_threads)
        return
    work = cache_root() / "bench"
    work.mkdir(parents=True, exist_ok=True)
    smol_a = resolve_model("bundled:SmolLM2-135M-Instruct")
    smol_b = perturbed_copy(smol_a, work / "smollm2-perturbed")
    print(f"torch {torch.__version__}, {os.cpu_count()} cores")
    if not os.environ.get("MERGEKIT_PYTHON"):
        print("mergekit not compared: set MERGEKIT_PYTHON to a python with mergekit==0.1.5 to measure it in this run")
    ours = bench_pair("SmolLM2-135M pair", smol_a, smol_b, SMOL_CONFIG, work)
    if "--smollm2-only" in sys.argv[1:]:
        return
    # Optional: MERGEKIT_PYTHON=/path/to/python-with-mergekit-0.1.5 compares in the same run.
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
