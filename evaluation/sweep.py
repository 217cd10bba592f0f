"""t-sweep: which parent does the merge resemble, and where along t?

For a pair and a prompt set: each parent answers every prompt greedily, once. Then for
each t on a grid the pair is merged in memory and the merged model scores, teacher-forced
through its own chat template, the mean per-token log-likelihood of A's reply and of B's.
Per t: the share of prompts where B's reply is the likelier (resemblance to B), the mean
log-likelihood gap (B minus A), and one sample reply.

It needs both engines, so it lives above them (merging/ and inference/ never import each
other). The app runs it through `sweep_stream`, its GPU boundary: a stateless generator of
plain data, so on a ZeroGPU Space it runs in the forked GPU worker (core/zerogpu.py).

    python -m evaluation sweep CONFIG.yml --prompts FILE [--grid 0,0.25,0.5,0.75,1] [--scale-curve]
    t=0.50 resemblance_b=0.47 gap=-0.08 n=30
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field

import torch

from core.errors import UserError
from core.hub_access import as_visitor
from core.sources import resolve_model
from core.zerogpu import gpu
from evaluation.prompt_set import PromptCase, read_prompts
from inference import load_model
from inference.chat import build_prompt
from inference.generation import eos_ids
from inference.loading import LoadedModel, load_with_weights, scoring_precision
from inference.replies import MAX_TOKENS_PER_S
from merging import MergeConfig, load_config
from merging.checkpoint import download_note
from merging.config import TRule
from merging.merge import merge_in_memory

DEFAULT_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
MAX_SWEEP_BYTES = 4 * 10**9  # in-memory merges: models up to about 2B parameters in bf16
# What a sweep asks ZeroGPU for (sweep_seconds); rough figures, generous on purpose.
SWEEP_OVERHEAD_S = 15.0  # the worker's start and both parents' loads
MERGE_S = 6.0  # an in-memory merge and its load, per t
SCORE_S = 0.2  # one teacher-forced pass
SWEEP_MIN_SECONDS, SWEEP_MAX_SECONDS = 30, 240


@dataclass(frozen=True)
class SweepPoint:
    t: float
    resemblance_b: float  # share of prompts where B's reply is the likelier under the merge
    gap: float  # mean over prompts of (log-likelihood per token of B's reply) - (of A's)
    n: int
    sample: str  # the merge's greedy reply to the first prompt

    def line(self) -> str:
        return f"t={self.t:.2f} resemblance_b={self.resemblance_b:.2f} gap={self.gap:+.2f} n={self.n}"


@dataclass(frozen=True)
class SweepProgress:
    stage: str
    done: int
    total: int


@dataclass(frozen=True)
class SweepRequest:
    """One sweep as plain data that pickles (it crosses the ZeroGPU boundary): the app
    builds it from what it checked, so the run is exactly what was checked."""
    config: MergeConfig
    prompts: tuple[PromptCase, ...]
    grid: tuple[float, ...] = DEFAULT_GRID
    scale_curve: bool = False
    max_new_tokens: int = 48
    token: str | None = field(default=None, repr=False)  # the signed-in visitor's: the parents download with it


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
    context, device = _context(loaded, prompt), _device(loaded)
    ids = torch.tensor([context + answer], device=device)
    with torch.inference_mode():
        logits = loaded.model(ids).logits[0, len(context) - 1:-1].float()
    return float(logits.log_softmax(-1).gather(-1, torch.tensor(answer, device=device)[:, None]).mean())


def greedy_ids(loaded: LoadedModel, prompt: PromptCase, max_new_tokens: int) -> list[int]:
    """The greedy reply's token ids, end-of-turn token excluded."""
    context = _context(loaded, prompt)
    eos = eos_ids(loaded)
    ids = torch.tensor([context], device=_device(loaded))
    with torch.inference_mode():
        out = loaded.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=max_new_tokens,
                                    eos_token_id=eos, pad_token_id=eos[0], temperature=None, top_p=None, top_k=None)
    reply = out[0, len(context):].tolist()
    return reply[:-1] if reply and reply[-1] in eos else reply


def _device(loaded: LoadedModel) -> torch.device:
    """Where the model's weights are: the models load where detect_device() says (a GPU when
    there is one, as in a ZeroGPU worker), and the inputs must be there too."""
    return next(loaded.model.parameters()).device


def _context(loaded: LoadedModel, prompt: PromptCase) -> list[int]:
    return build_prompt(loaded.tokenizer, list(prompt.messages), context_length=loaded.context_length).input_ids


def sweep_steps(config: MergeConfig, prompts: list[PromptCase], grid: tuple[float, ...] = DEFAULT_GRID, scale_curve: bool = False,
                max_new_tokens: int = 48, token: str | None = None) -> Generator[SweepProgress, None, list[SweepPoint]]:
    """The sweep one step at a time: a SweepProgress after each step, then (as the
    generator's return value) one SweepPoint per t. Closing it stops it at that step.
    What reads the parents runs as the visitor whose `token` it is (never across a yield:
    the generator may resume in another context)."""
    if not prompts:
        raise UserError("prompts", "no prompts", "give at least one prompt (one per line)")
    total = 2 * len(prompts) + len(grid) * (len(prompts) + 1)
    done = 0
    replies: dict[str, list[list[int]]] = {"a": [], "b": []}
    vocabularies = []
    with as_visitor(token):
        note = download_note(list(config.models), "The t-sweep")
    if note is not None:
        yield SweepProgress(note, done, total)  # said before the download starts
    for side, ref in (("a", config.base_model), ("b", config.other_model)):
        with as_visitor(token):
            parent = load_model(ref, scoring_precision())
        vocabularies.append(parent.tokenizer.get_vocab())
        for prompt in prompts:
            replies[side].append(greedy_ids(parent, prompt, max_new_tokens))
            done += 1
            yield SweepProgress(f"parent {side.upper()} replies", done, total)
    if vocabularies[0] != vocabularies[1]:
        raise UserError("t-sweep", "the parents have different tokenizers", "sweep parents that share one tokenizer")
    with as_visitor(token):
        folder = str(resolve_model(config.base_model))
    points = []
    for t in grid:
        with as_visitor(token):
            weights = merge_in_memory(config_at(config, t, scale_curve), MAX_SWEEP_BYTES)
        merged = load_with_weights(folder, weights, scoring_precision(), f"t={t:g}")
        done += 1
        yield SweepProgress(f"merge at t={t:g}", done, total)
        gaps = []
        for prompt, reply_a, reply_b in zip(prompts, replies["a"], replies["b"], strict=True):
            la, lb = reply_loglik(merged, prompt, reply_a), reply_loglik(merged, prompt, reply_b)
            done += 1
            yield SweepProgress(f"scoring t={t:g}", done, total)
            if la is not None and lb is not None:
                gaps.append(lb - la)
        sample = merged.tokenizer.decode(greedy_ids(merged, prompts[0], max_new_tokens), skip_special_tokens=True)
        n = len(gaps)
        points.append(SweepPoint(t, sum(g > 0 for g in gaps) / n if n else 0.0, sum(gaps) / n if n else 0.0, n, sample))
    return points


def t_sweep(config: MergeConfig, prompts: list[PromptCase], grid: tuple[float, ...] = DEFAULT_GRID, scale_curve: bool = False,
            max_new_tokens: int = 48, on_progress: Callable[[str, int, int], None] | None = None,
            cancel: threading.Event | None = None) -> list[SweepPoint]:
    """One SweepPoint per t. Progress: (stage, done, total); a set `cancel` stops between steps."""
    cancel = cancel or threading.Event()
    report = on_progress or (lambda stage, done, total: None)
    with contextlib.closing(sweep_steps(config, prompts, grid, scale_curve, max_new_tokens)) as steps:
        while True:
            try:
                progress = next(steps)
            except StopIteration as end:
                return end.value
            if cancel.is_set():
                raise UserError("t-sweep", "cancelled", "run it again")
            report(progress.stage, progress.done, progress.total)


def sweep_seconds(request: SweepRequest) -> int:
    """The GPU duration a sweep asks ZeroGPU for: its greedy replies at a Python loop's
    pace, a merge per t and a scoring pass per prompt and t, twice over for safety, plus the
    worker's start and the parents' loads, within [SWEEP_MIN_SECONDS, SWEEP_MAX_SECONDS]."""
    prompts, grid = len(request.prompts), len(request.grid)
    reply = request.max_new_tokens / MAX_TOKENS_PER_S
    work = 2 * prompts * reply + grid * (MERGE_S + prompts * SCORE_S + reply)
    return int(min(SWEEP_MAX_SECONDS, max(SWEEP_MIN_SECONDS, SWEEP_OVERHEAD_S + 2 * work)))


@gpu(sweep_seconds, instead="sweep fewer prompts or values of t, which asks for less GPU time")
def sweep_stream(request: SweepRequest) -> Iterator[SweepProgress | tuple[SweepPoint, ...]]:
    """The app's sweep through the GPU boundary: a SweepProgress after each step, then the
    points (a tuple, one per t). Stateless and plain data both ways, so on ZeroGPU it runs
    in the forked worker; closing it (Cancel) stops the sweep at its next step."""
    points = yield from sweep_steps(request.config, list(request.prompts), request.grid, request.scale_curve,
                                    request.max_new_tokens, request.token)
    yield tuple(points)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation sweep", description="Which parent does the merge resemble, per t?")
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

