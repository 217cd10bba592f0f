"""Merge at the seeds' real size: a Mistral-7B-shaped pair, the project against mergekit
and the IO floor, warm and cold, in one run (`python benchmarks/merge_bench.py --size 7b`).

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

import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
MERGEKIT_SETUP = ("python3 -m venv /tmp/mkv && /tmp/mkv/bin/pip install torch==2.13.0 mergekit==0.1.5 transformers==5.23.0, "
                  "then MERGEKIT_PYTHON=/tmp/mkv/bin/python")
POOL_ELEMENTS = 64 * 2**20  # 128 MB of bf16: generated in about a second, reused for every tensor


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    shard_bytes: int


SIZES = {
    "7b": Shape(4096, 32, 14336, 32000, 32, 8, 5 * 10**9),  # Mistral-7B-v0.1
    "1b": Shape(2048, 16, 5632, 32000, 16, 4, 10**9),
    "tiny": Shape(256, 4, 768, 4000, 8, 2, 2 * 10**6),  # a smoke test of the benchmark itself
}


def tensor_shapes(s: Shape) -> list[tuple[str, tuple[int, ...]]]:
    head_dim = s.hidden // s.heads
    shapes = [("model.embed_tokens.weight", (s.vocab, s.hidden))]
    for i in range(s.layers):
        p = f"model.layers.{i}."
        shapes += [(p + "input_layernorm.weight", (s.hidden,)), (p + "mlp.down_proj.weight", (s.hidden, s.intermediate)),
                   (p + "mlp.gate_proj.weight", (s.intermediate, s.hidden)), (p + "mlp.up_proj.weight", (s.intermediate, s.hidden)),
                   (p + "post_attention_layernorm.weight", (s.hidden,)),
                   (p + "self_attn.k_proj.weight", (s.kv_heads * head_dim, s.hidden)),
                   (p + "self_attn.o_proj.weight", (s.hidden, s.hidden)), (p + "self_attn.q_proj.weight", (s.hidden, s.hidden)),
                   (p + "self_attn.v_proj.weight", (s.kv_heads * head_dim, s.hidden))]
    return shapes + [("model.norm.weight", (s.hidden,)), ("lm_head.weight", (s.vocab, s.hidden))]


def build_model(folder: Path, s: Shape, pool: np.ndarray, seed: int) -> Path:
    """One parent: every tensor a wrapped window of `pool` (raw bf16 bytes, as uint16)
    starting at an offset drawn from `seed`. Written header first, then straight from the pool."""
    if (folder / "config.json").is_file():
        return folder
    work = folder.with_name(folder.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shapes = tensor_shapes(s)
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, shape in shapes:
        nbytes = int(np.prod(shape)) * 2
        if shards[-1] and size + nbytes > s.shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, shape))
        size += nbytes
    offsets = np.random.default_rng(seed).integers(0, len(pool), len(shapes))
    weight_map, k = {}, 0
    for n, shard in enumerate(shards):
        file = f"model-{n + 1:05d}-of-{len(shards):05d}.safetensors"
        header, start = {"__metadata__": {"format": "pt"}}, 0
        for name, shape in shard:
            end = start + int(np.prod(shape)) * 2
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [start, end]}
            start = end
            weight_map[name] = file
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)
        with open(work / file, "wb") as fh:
            fh.write(len(encoded).to_bytes(8, "little") + encoded)
            for _, shape in shard:
                left, at = int(np.prod(shape)), int(offsets[k])
                k += 1
                while left:
                    take = min(left, len(pool) - at)
                    fh.write(memoryview(pool[at: at + take]))
                    left, at = left - take, 0
    total = sum(int(np.prod(shape)) * 2 for _, shape in shapes)
    (work / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    config = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "hidden_size": s.hidden,
              "intermediate_size": s.intermediate, "num_hidden_layers": s.layers, "num_attention_heads": s.heads,
              "num_key_value_heads": s.kv_heads, "head_dim": s.hidden // s.heads, "vocab_size": s.vocab,
              "max_position_embeddings": 32768, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "sliding_window": 4096,
              "hidden_act": "silu", "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2, "dtype": "bfloat16"}
    (work / "config.json").write_text(json.dumps(config, indent=2))
    work.rename(folder)
    return folder


def build_pair(work: Path, s: Shape) -> tuple[Path, Path]:
    started = time.perf_counter()
    pool = (torch.randn(POOL_ELEMENTS, generator=torch.Generator().manual_seed(0)) * 0.02).bfloat16().view(torch.int16).numpy()
    a, b = build_model(work / "parent-a", s, pool, seed=1), build_model(work / "parent-b", s, pool, seed=2)
    print(f"pair ready in {time.perf_counter() - started:.0f} s: {folder_bytes(a) / 1e9:.1f} GB each, "
          f"{len(list(a.glob('*.safetensors')))} shards, under {work}", flush=True)
    return a, b


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


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


def check_output(out: Path, a: Path, b: Path, n_layers: int) -> float:
    """Largest distance, in bf16 ulps, from the mergekit transcription (tests/reference.py)
    on one blended tensor (a middle layer's k_proj)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from reference import bf16_ulps, reference_gradient, reference_slerp
    from safetensors import safe_open

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
    from merge_bench import SEED_CONFIG, run_timed

    s = SIZES[size]
    work.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(work).free
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, {free / 1e9:.0f} GB free under {work}", flush=True)
    a, b = build_pair(work, s)
    config = work / "merge.yml"
    config.write_text(SEED_CONFIG.format(a=a, b=b, n=s.layers))
    out = work / "merged"
    mergekit = os.environ.get("MERGEKIT_PYTHON")
    if not mergekit:
        print(f"mergekit not compared: set it up with `{MERGEKIT_SETUP}`", flush=True)

    from merging import load_config
    from merging.dry_run import dry_run
    from merging.feed import DEFAULT_MAX_RAM, parse_max_ram

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
