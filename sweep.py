"""t-sweep: which parent does the merge resemble, and where along t?

For a pair and a prompt set: each parent answers every prompt greedily, once. Then for
each t on a grid the pair is merged in memory and the merged model scores, teacher-forced
through its own chat template, the mean per-token log-likelihood of A's reply and of B's.
Per t: the share of prompts where B's reply is the likelier (resemblance to B), the mean
log-likelihood gap (B minus A), and one sample reply.

It needs both engines, so it lives above them (merging/ and inference/ never import each
other).

    python -m sweep CONFIG.yml --prompts FILE [--grid 0,0.25,0.5,0.75,1] [--scale-curve]
    t=0.50 resemblance_b=0.47 gap=-0.08 n=30
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch

from core.errors import UserError
from core.sources import resolve_model
from inference import load_model
from inference.chat import build_prompt
from inference.generation import eos_ids
from inference.loading import LoadedModel, load_with_weights
from inference.prompt_set import PromptCase, read_prompts
from merging import MergeConfig, load_config
from merging.config import TRule
from merging.merge import merge_in_memory

DEFAULT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
MAX_SWEEP_BYTES = 4 * 10**9  # in-memory merges: models up to about 2B parameters in bf16


@dataclass(frozen=True)
class SweepPoint:
    t: float
    resemblance_b: float  # share of prompts where B's reply is the likelier under the merge
    gap: float  # mean over prompts of (log-likelihood per token of B's reply) - (of A's)
    n: int
    sample: str  # the merge's greedy reply to the first prompt

    def line(self) -> str:
        return f"t={self.t:.2f} resemblance_b={self.resemblance_b:.2f} gap={self.gap:+.2f} n={self.n}"


def parse_grid(text: str, field: str) -> tuple[float, ...]:
    """t values from "0, 0.25, 0.5" (commas and/or spaces), each in [0, 1], sorted and
    without repeats: the sweep's plot and table read left to right along t."""
    try:
        grid = sorted({float(v) for v in text.replace(",", " ").split()})
    except ValueError:
        grid = []
    if not grid or not all(0.0 <= t <= 1.0 for t in grid):
        raise UserError(field, f"'{text.strip()}' is not a list of numbers in [0, 1]", "write e.g. 0, 0.25, 0.5, 0.75, 1")
    return tuple(grid)


def config_at(config: MergeConfig, t: float, scale_curve: bool) -> MergeConfig:
    """The config at grid point t: one constant t everywhere, or (scale_curve) every curve
    of the config multiplied by t."""
    def rules(original: tuple[TRule, ...] | None) -> tuple[TRule, ...] | None:
        if original is None:
            return None
        if not scale_curve:
            return (TRule((t,)),)
        return tuple(TRule(tuple(min(1.0, v * t) for v in r.value), r.filter) for r in original)

    slices = None if config.slices is None else tuple(dataclasses.replace(s, t_rules=rules(s.t_rules)) for s in config.slices)
    return dataclasses.replace(config, t_rules=rules(config.t_rules), slices=slices)


def reply_loglik(loaded: LoadedModel, prompt: PromptCase, answer: list[int]) -> float | None:
    """Mean log-probability per token of the reply `answer` (token ids) after `prompt`,
    teacher-forced through the model's chat template; None for an empty reply. Token ids,
    not text: a decode / re-encode round trip can change the tokens being scored."""
    if not answer:
        return None
    context = _context(loaded, prompt)
    ids = torch.tensor([context + answer])
    with torch.inference_mode():
        logits = loaded.model(ids).logits[0, len(context) - 1:-1].float()
    return float(logits.log_softmax(-1).gather(-1, torch.tensor(answer)[:, None]).mean())


def greedy_ids(loaded: LoadedModel, prompt: PromptCase, max_new_tokens: int) -> list[int]:
    """The greedy reply's token ids, end-of-turn token excluded."""
    context = _context(loaded, prompt)
    eos = eos_ids(loaded)
    ids = torch.tensor([context])
    with torch.inference_mode():
        out = loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens,
                                    eos_token_id=eos, pad_token_id=eos[0], temperature=None, top_p=None, top_k=None)
    reply = out[0, len(context):].tolist()
    return reply[:-1] if reply and reply[-1] in eos else reply


def _context(loaded: LoadedModel, prompt: PromptCase) -> list[int]:
    return build_prompt(loaded.tokenizer, list(prompt.messages), context_length=loaded.context_length).input_ids


def t_sweep(config: MergeConfig, prompts: list[PromptCase], grid: tuple[float, ...] = DEFAULT_GRID, scale_curve: bool = False,
            max_new_tokens: int = 48, on_progress: Callable[[str, int, int], None] | None = None,
            cancel: threading.Event | None = None) -> list[SweepPoint]:
    """One SweepPoint per t. Progress: (stage, done, total); a set `cancel` stops between steps."""
    if not prompts:
        raise UserError("prompts", "no prompts", "give at least one prompt (one per line)")
    cancel = cancel or threading.Event()
    report = on_progress or (lambda stage, done, total: None)
    total = 2 * len(prompts) + len(grid) * (len(prompts) + 1)
    done = 0

    def step(stage: str) -> None:
        nonlocal done
        if cancel.is_set():
            raise UserError("t-sweep", "cancelled", "run it again")
        done += 1
        report(stage, done, total)

    replies: dict[str, list[list[int]]] = {"a": [], "b": []}
    vocabularies = []
    for side, ref in (("a", config.base_model), ("b", config.other_model)):
        parent = load_model(ref, "bf16")
        vocabularies.append(parent.tokenizer.get_vocab())
        for prompt in prompts:
            replies[side].append(greedy_ids(parent, prompt, max_new_tokens))
            step(f"parent {side.upper()} replies")
    if vocabularies[0] != vocabularies[1]:
        raise UserError("t-sweep", "the parents have different tokenizers", "sweep parents that share one tokenizer")
    folder = str(resolve_model(config.base_model))
    points = []
    for t in grid:
        merged = load_with_weights(folder, merge_in_memory(config_at(config, t, scale_curve), MAX_SWEEP_BYTES), "bf16", f"t={t:g}")
        step(f"merge at t={t:g}")
        gaps = []
        for prompt, reply_a, reply_b in zip(prompts, replies["a"], replies["b"], strict=True):
            la, lb = reply_loglik(merged, prompt, reply_a), reply_loglik(merged, prompt, reply_b)
            step(f"scoring t={t:g}")
            if la is not None and lb is not None:
                gaps.append(lb - la)
        sample = merged.tokenizer.decode(greedy_ids(merged, prompts[0], max_new_tokens), skip_special_tokens=True)
        n = len(gaps)
        points.append(SweepPoint(t, sum(g > 0 for g in gaps) / n if n else 0.0, sum(gaps) / n if n else 0.0, n, sample))
    return points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweep", description="Which parent does the merge resemble, per t?")
    parser.add_argument("config", help="mergekit YAML (merge_method: slerp)")
    parser.add_argument("--prompts", required=True, help="prompt set: .txt (one prompt per line) or .jsonl (prompts/demo.jsonl)")
    parser.add_argument("--grid", default=",".join(f"{t:g}" for t in DEFAULT_GRID), help="t values, comma-separated")
    parser.add_argument("--scale-curve", action="store_true", help="scale the config's own t curves by each grid value")
    parser.add_argument("--limit", type=int, default=None, help="use the first N prompts")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args(argv)
    try:
        grid = parse_grid(args.grid, "--grid")
        prompts = read_prompts(args.prompts, "--prompts")[: args.limit]
        points = t_sweep(load_config(args.config), prompts, grid, args.scale_curve, args.max_new_tokens)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for point in points:
        print(point.line(), flush=True)
    print(f"sample at t={points[len(points) // 2].t:g}: {points[len(points) // 2].sample!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
