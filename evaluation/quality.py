"""The demo's quality figures: persona, on topic, loops and profanity over a prompt set,
for the original model, the demo parent and their merge, under given sampling settings,
or over a grid of settings (how the app's sampling defaults were chosen).

It merges in memory, so it needs both engines and lives above them, like the t-sweep.

    python -m evaluation quality                      # the app's defaults, held-out half, 2 seeds
    python -m evaluation quality --grid               # every candidate setting, on the seen half
    python -m evaluation quality --settings 0.7,0.9,1.2 --half all
    python -m evaluation quality --prompts prompts/chat_examples.jsonl --half all --seeds 6 --first-seed 4
"""

from __future__ import annotations

import argparse
import itertools
import sys
from dataclasses import dataclass, replace

from core.errors import UserError
from core.sources import DEFAULT_MODEL, resolve_model
from evaluation.batch import batch_replies
from evaluation.demo_parent import build_demo_parent
from evaluation.prompt_set import DEMO_PROMPTS, PromptCase, read_prompts, split_halves
from evaluation.reply_quality import Quality, score
from inference.generation import GenerationSettings
from inference.loading import LoadedModel, load_model, load_with_weights, scoring_precision
from inference.sharing import Cores
from merging.form import PRESETS, MergeForm, config_from_form
from merging.merge import merge_in_memory

# The candidates (temperature, top_p, repetition penalty): plain greedy, greedy with a
# penalty, the old default (0.7, 1, 1), and sampling with a penalty. The grid is small
# because each setting costs about 2 minutes on 2 cores (3 models x 19 prompts).
GRID = ((0.0, 1.0, 1.0), (0.0, 1.0, 1.2), (0.7, 1.0, 1.0),
        *itertools.product((0.5, 0.7), (0.9, 1.0), (1.1, 1.2)))
DEMO_PRESET = "V-shape"


@dataclass(frozen=True)
class Figures:
    settings: GenerationSettings
    by_model: dict[str, Quality]

    def lines(self) -> list[str]:
        s = self.settings
        head = f"temperature={s.temperature:g} top_p={s.top_p:g} repetition_penalty={s.repetition_penalty:g}"
        return [f"{head} model={name!r} {q.line()}" for name, q in self.by_model.items()]


def demo_models(base: str = DEFAULT_MODEL, preset: str = DEMO_PRESET) -> dict[str, LoadedModel]:
    """The original (A), the demo parent (B), and their merge on the preset's curve."""
    parent = str(build_demo_parent(base))
    config = config_from_form(MergeForm(base, parent, *PRESETS[preset], 0, 0, "bfloat16"))
    precision, cores = scoring_precision(), Cores()  # they answer side by side: one share of the cores (inference/sharing.py)
    merged = load_with_weights(str(resolve_model(base)), merge_in_memory(config, 4 * 10**9), precision, f"merge ({preset})",
                               cores=cores)
    return {"original": load_model(base, precision, cores=cores), "demo parent": load_model(parent, precision, cores=cores),
            f"merge ({preset})": merged}


def measure(models: dict[str, LoadedModel], cases: list[PromptCase], settings: GenerationSettings,
            seeds: int = 2, first_seed: int = 0) -> Figures:
    """Each model's figures over `seeds` sampled replies per case (one for greedy), seeded
    from `first_seed` on (seeds a choice of prompts was made with can be left out)."""
    runs = 1 if settings.temperature == 0 else seeds
    by_model = {}
    for name, loaded in models.items():
        replies, repeated = [], []
        for seed in range(first_seed, first_seed + runs):
            replies += batch_replies(loaded.model, loaded.tokenizer, cases, replace(settings, seed=seed), batch_size=len(cases))
            repeated += cases
        by_model[name] = score(replies, repeated)
    return Figures(settings, by_model)


def best(results: list[Figures]) -> Figures:
    """The rule the app's defaults were chosen by: no loop and no profanity in any model's
    replies, then the highest mean on-topic share over the models, then the higher
    temperature (more varied replies for the same quality)."""
    def key(f: Figures) -> tuple:
        clean = all(q.loops == 0 and q.profane == 0 for q in f.by_model.values())
        return clean, sum(q.on_topic for q in f.by_model.values()), f.settings.temperature

    return max(results, key=key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", default=str(DEMO_PROMPTS), help="a .jsonl prompt set with topic words")
    parser.add_argument("--half", choices=("seen", "held-out", "all"), default=None,
                        help="which cases (default: held-out, or seen with --grid)")
    parser.add_argument("--grid", action="store_true", help="measure every candidate setting")
    parser.add_argument("--settings", help="temperature,top_p,repetition_penalty (default: the app's)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--preset", choices=tuple(PRESETS), default=DEMO_PRESET, help="the merge's t curve")
    parser.add_argument("--max-new-tokens", type=int, default=GenerationSettings().max_new_tokens)
    args = parser.parse_args(argv)
    try:
        cases = read_prompts(args.prompts, "--prompts")
        seen, held_out = split_halves(cases)
        half = args.half or ("seen" if args.grid else "held-out")
        chosen = {"seen": seen, "held-out": held_out, "all": cases}[half]
        if args.grid:
            candidates = [GenerationSettings(temperature=t, top_p=p, repetition_penalty=r) for t, p, r in GRID]
        elif args.settings:
            try:
                t, p, r = (float(v) for v in args.settings.split(","))
            except ValueError:
                raise UserError("--settings", f"'{args.settings}' is not three numbers", "write e.g. 0.7,0.9,1.2") from None
            candidates = [GenerationSettings(temperature=t, top_p=p, repetition_penalty=r)]
        else:
            candidates = [GenerationSettings()]
        models = demo_models(preset=args.preset)
        print(f"# {len(chosen)} cases ({half} half of {args.prompts}), {args.seeds} seeds when sampling", flush=True)
        results = []
        for settings in candidates:
            results.append(measure(models, chosen, replace(settings, max_new_tokens=args.max_new_tokens), args.seeds, args.first_seed))
            for line in results[-1].lines():
                print(line, flush=True)
        if len(results) > 1:
            s = best(results).settings
            print(f"best: temperature={s.temperature:g} top_p={s.top_p:g} repetition_penalty={s.repetition_penalty:g}")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0

