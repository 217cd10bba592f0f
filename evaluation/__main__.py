"""CLI.

python -m evaluation sweep CONFIG.yml --prompts prompts/demo.jsonl   # which parent the merge resembles, per t
python -m evaluation quality [--grid]                                # persona / on topic / loops of the demo models
python -m evaluation demo-parent [BASE]                              # build (or find) the pirate demo parent
python -m evaluation replies MODEL [MODEL …] --prompts FILE          # one JSON line per reply per model
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from core.errors import UserError
from core.sources import DEFAULT_MODEL
from evaluation import quality, sweep
from evaluation.prompt_set import read_prompts
from inference.cache import ModelCache
from inference.generation import GenerationSettings, run_side_by_side
from inference.loading import PRECISIONS

COMMANDS = {"sweep": sweep.main, "quality": quality.main}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        return COMMANDS[argv[0]](argv[1:])
    parser = argparse.ArgumentParser(prog="python -m evaluation", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        commands.add_parser(name, help=f"see python -m evaluation {name} --help")
    demo = commands.add_parser("demo-parent", help="build (or find cached) the offline demo parent: SmolLM2 with a distilled persona")
    demo.add_argument("base", nargs="?", default=DEFAULT_MODEL)
    demo.add_argument("--compute", choices=("auto", "bf16", "fp32"), default="auto",
                      help="auto: bf16 where the CPU has native bf16 (AVX512-BF16 or AMX), else fp32")
    replies = commands.add_parser("replies", help="a prompt set sent to models side by side, one JSON line per reply per model")
    replies.add_argument("models", nargs="+", help="local folders, Hub ids, .gguf files or endpoints, as in python -m inference chat")
    replies.add_argument("--prompts", required=True, help="a prompt set (.txt, one prompt per line, or .jsonl): a fresh conversation each")
    replies.add_argument("--precision", default="auto", choices=PRECISIONS)
    replies.add_argument("--system", default="", help="system prompt")
    replies.add_argument("--max-new-tokens", type=int, default=128)
    replies.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    replies.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        return run_demo_parent(args.base, args.compute) if args.command == "demo-parent" else run_replies(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run_replies(args: argparse.Namespace) -> int:
    """Each prompt as a fresh conversation with every model side by side; one JSON line
    per reply per model, so a prompt set can be compared (or scored) from the shell."""
    prompts = read_prompts(args.prompts, "--prompts")
    cache = ModelCache()
    models = [cache.get(ref, args.precision) for ref in args.models]
    settings = GenerationSettings(temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed)
    failed = False
    for prompt in prompts:
        history = list(prompt.messages)
        for reply in run_side_by_side(models, [history] * len(models), settings, system_prompt=args.system):
            print(json.dumps({"model": reply.model, "prompt": prompt.text, "reply": reply.text, "tokens": reply.stats.new_tokens,
                              "seconds": round(reply.stats.seconds, 3), **({"error": reply.error} if reply.error else {})},
                             ensure_ascii=False), flush=True)
            failed |= bool(reply.error)
    return 1 if failed else 0


def run_demo_parent(base: str, compute: str) -> int:
    from tqdm import tqdm

    from evaluation.demo_parent import DistillSettings, build_demo_parent, demo_report

    bars: dict[str, tqdm] = {}

    def on_progress(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            bars[stage] = tqdm(total=total, desc=stage)
        bars[stage].update(done - bars[stage].n)

    started, stages = time.perf_counter(), {}

    def timed(stage: str, done: int, total: int) -> None:
        stages[stage] = time.perf_counter()
        on_progress(stage, done, total)

    settings = DistillSettings(compute=compute)
    folder = build_demo_parent(base, settings, on_progress=timed)
    for bar in bars.values():
        bar.close()
    print(f"demo parent: {folder} ({time.perf_counter() - started:.1f} s, computed in {settings.compute_dtype()})")
    last = started
    for stage, ended in stages.items():
        print(f"  {stage}: {ended - last:.1f} s")
        last = ended
    print("held-out half of prompts/demo.jsonl, default sampling:")
    for name, quality_line in demo_report(folder).items():
        print(f"  {name}: {quality_line.line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
