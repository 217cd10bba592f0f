"""Parent pairs for merge tests and benchmarks: the seed config (a LazyMergekit-style
V-shaped SLERP), a perturbed copy of a real model, and synthetic Llama / Mistral-shaped
checkpoints of any size, sharded as on the Hub."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

# The seed's V-shaped SLERP over {n} layers (benchmarks use it up to 7B).
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
