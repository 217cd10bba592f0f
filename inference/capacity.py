"""What fits where: the three chat panes (the merge and both parents) of the seed model
sizes on Hugging Face hardware, sized by the app's own estimator and judged by its own
memory guard. Nothing is downloaded or loaded: each model is built from its config on
the meta device (inference.loading.estimate_footprint), so this runs in seconds anywhere.

The rule applied is the one ModelCache applies when a visitor opens the Chat tab: the panes
load one after another (Merged, Parent A, Parent B), and each load must fit in what is
free less the 20% of memory the guard keeps free (loading.allowance_of). That 20% is the
headroom for the KV cache and activations; the footnotes check it against a KV cache.
A load asks for the model in bf16 (estimate_load_bytes, what is read before quantizing);
what stays is the quantized footprint (LoadReport.weight_bytes).

Run: `python -m inference fits-where` (prints a Markdown table and its notes).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from core.architectures import family_of
from inference.loading import KEEP_FREE_FRACTION, Footprint, allowance_of, estimate_footprint
from inference.quantize import Hardware

GB = 10**9

# The seed pairs' sizes, as their config.json files give them.
SIZES: dict[str, dict] = {
    "Qwen2.5-0.5B": dict(model_type="qwen2", hidden_size=896, num_hidden_layers=24, intermediate_size=4864, vocab_size=151936,
                         num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True, max_position_embeddings=32768),
    "Gemma2-2.6B (gemma-2-2b)": dict(model_type="gemma2", hidden_size=2304, num_hidden_layers=26, intermediate_size=9216,
                                     vocab_size=256000, num_attention_heads=8, num_key_value_heads=4, head_dim=256,
                                     tie_word_embeddings=True, max_position_embeddings=8192),
    "Mistral-7B": dict(model_type="mistral", hidden_size=4096, num_hidden_layers=32, intermediate_size=14336, vocab_size=32000,
                       num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False, max_position_embeddings=32768),
}

# The app process before any model: RSS of a Python that has imported app.py (torch,
# transformers, gradio), measured on the 2-core dev machine. On a GPU the weights live in
# VRAM, whose own baseline (the CUDA context) could not be measured here: not counted.
APP_PROCESS_BYTES = int(0.35 * GB)
KV_TOKENS = 4096  # context per pane for the KV-cache check in the footnotes


@dataclass(frozen=True)
class Target:
    label: str
    memory_bytes: int  # what the guard measures: RAM on CPU, VRAM on a GPU
    hardware: Hardware
    baseline_bytes: int  # taken before the first model loads


# Figures from the Hugging Face docs (hub/spaces-gpus, hub/spaces-zerogpu): CPU basic
# 2 vCPU / 16 GB; ZeroGPU's default `large` size is half an RTX Pro 6000 Blackwell, 48 GB
# (cc 12.0, native FP8; the docs of 2026-08, /work/shared/NOTES.md);
# L4 and A10G have 24 GB (only the L4, Ada, cc 8.9, has native FP8; the A10G is cc 8.6);
# A100 80 GB (cc 8.0, no native FP8).
TARGETS = [
    Target("CPU basic (2 vCPU, 16 GB RAM)", 16 * GB, Hardware(cuda=False, native_fp8=False), APP_PROCESS_BYTES),
    Target("ZeroGPU large (half RTX Pro 6000, 48 GB)", 48 * GB, Hardware(cuda=True, native_fp8=True), 0),
    Target("L4 (24 GB)", 24 * GB, Hardware(cuda=True, native_fp8=True), 0),
    Target("A10G (24 GB)", 24 * GB, Hardware(cuda=True, native_fp8=False), 0),
    Target("A100 (80 GB)", 80 * GB, Hardware(cuda=True, native_fp8=False), 0),
]


@dataclass(frozen=True)
class PanePlan:
    merged: Footprint
    parents: Footprint
    fits: bool
    why: str  # the first load the guard refuses, or ""

    @property
    def total_bytes(self) -> int:
        """What the three panes keep once loaded."""
        return self.merged.resident_bytes + 2 * self.parents.resident_bytes

    def label(self) -> str:
        return f"{self.merged.precision} + 2× {self.parents.precision}"


@functools.cache
def footprint(size: str, precision: str, hardware: Hardware) -> Footprint:
    return estimate_footprint(SIZES[size], precision, hardware, size)


def plan_panes(size: str, merged: str, parents: str, target: Target) -> PanePlan:
    """Load Merged, Parent A, Parent B in turn as ModelCache does, nothing evicted: each
    load's bf16 size must fit the guard's allowance given what is loaded already."""
    merged_fp = footprint(size, merged, target.hardware)
    parent_fp = footprint(size, parents, target.hardware)
    used = target.baseline_bytes
    for pane, pane_fp in zip(("Merged", "Parent A", "Parent B"), (merged_fp, parent_fp, parent_fp), strict=True):
        allowance = allowance_of(target.memory_bytes - used, target.memory_bytes)
        if pane_fp.load_bytes > allowance:
            why = f"{pane} needs {pane_fp.load_bytes / GB:.1f} GB to load, {max(allowance, 0) / GB:.1f} GB left"
            return PanePlan(merged_fp, parent_fp, False, why)
        used += pane_fp.resident_bytes
    return PanePlan(merged_fp, parent_fp, True, "")


def combinations(target: Target) -> list[tuple[str, str]]:
    """Best first: parents in bf16 (what they are) before int8; the merge in the app's
    `auto` choice (fp8 where the GPU has it natively, else int8) before the other one."""
    auto = "fp8" if target.hardware.native_fp8 else "int8"
    other = "int8" if auto == "fp8" else "fp8"
    return [(auto, "bf16"), (other, "bf16"), (auto, "int8"), (other, "int8")]


def best_fit(size: str, target: Target) -> PanePlan:
    """The first combination that fits; when none does, the smallest one, to say why."""
    plans = [plan_panes(size, merged, parents, target) for merged, parents in combinations(target)]
    return next((p for p in plans if p.fits), min(plans, key=lambda p: p.total_bytes))


def cell(plan: PanePlan) -> str:
    if plan.fits:
        return f"{plan.label()}: {plan.total_bytes / GB:.1f} GB"
    return f"does not fit (even {plan.label()}, {plan.total_bytes / GB:.1f} GB: {plan.why})"


def kv_cache_bytes(config: dict, tokens: int) -> int:
    """bf16 keys and values of every layer for `tokens` tokens (the whole context, no sliding window)."""
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    return 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * head_dim * 2 * tokens


def table() -> str:
    header = ["model"] + [f"{t.label}, limit {(1 - KEEP_FREE_FRACTION) * t.memory_bytes / GB:.1f} GB" for t in TARGETS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for size in SIZES:
        lines.append("| " + " | ".join([size] + [cell(best_fit(size, t)) for t in TARGETS]) + " |")
    return "\n".join(lines)


def footnotes() -> str:
    kept = ", ".join(f"{KEEP_FREE_FRACTION * t.memory_bytes / GB:.1f} GB on {t.label.split(' (')[0]}" for t in TARGETS)
    kv = ", ".join(f"{name.split(' ')[0]} {3 * kv_cache_bytes(c, KV_TOKENS) / GB:.2f} GB" for name, c in SIZES.items())
    return "\n\n".join([  # paragraphs: printed under the table in the README
        f"GB = 10^9 bytes. A cell is the first combination that fits, best first: parents in bf16 before int8, the "
        f"merge in `auto` (fp8 where the GPU has native FP8, else int8). The limit is the memory less the "
        f"{KEEP_FREE_FRACTION:.0%} the guard keeps free. Totals are the three panes' weights once loaded; on CPU the app "
        f"process ({APP_PROCESS_BYTES / GB:.2f} GB) comes on top. A load asks for the model in bf16, whatever precision it ends in.",
        f"The {KEEP_FREE_FRACTION:.0%} kept free ({kept}) is the headroom for the KV cache and activations: "
        f"three panes × {KV_TOKENS} tokens of bf16 KV cache take {kv}.",
        f"Chat path on CPU, by family: {chat_paths()}.",
    ])


def chat_paths() -> str:
    """Each size's family and whether the lean decode loop runs it, as the family's description says."""
    def path(config: dict) -> str:
        family = family_of(config["model_type"])
        return f"{family.name}, {'the lean decode loop (float32 KV cache)' if family.lean else 'transformers generate'}"
    return "; ".join(f"{name.split(' ')[0]}: {path(config)}" for name, config in SIZES.items())


def markdown_table() -> str:
    """The table and its notes, as `python -m inference fits-where` prints them."""
    return f"{table()}\n\n{footnotes()}"
