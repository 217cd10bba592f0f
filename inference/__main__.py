"""CLI.

python -m inference chat MODEL [MODEL …] --precision auto|fp8|int8|bf16 --prompt "…"
python -m inference bench [MODEL] [--tokens 128]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from core.errors import UserError
from core.sources import DEFAULT_MODEL, ENDPOINT_FORM
from inference.bench import run_bench
from inference.cache import ModelCache
from inference.endpoint import EndpointModel
from inference.generation import ChatModel, GenerationSettings, run_side_by_side
from inference.loading import PRECISIONS
from inference.prompt_set import PromptCase, read_prompts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference")
    commands = parser.add_subparsers(dest="command", required=True)
    chat = commands.add_parser("chat", help="send one prompt to one or more models, side by side")
    chat.add_argument("models", nargs="+", help=f"local folders, Hub ids, .gguf files, {DEFAULT_MODEL}, "
                      f"or OpenAI-compatible endpoints {ENDPOINT_FORM} (API key: SLERP_ARENA_ENDPOINT_KEY or OPENAI_API_KEY)")
    chat.add_argument("--precision", default="auto", choices=PRECISIONS)
    given = chat.add_mutually_exclusive_group(required=True)
    given.add_argument("--prompt")
    given.add_argument("--prompts-file", help="a prompt set (.txt, one prompt per line, or .jsonl): a fresh conversation each, "
                       "one JSON line per reply per model on stdout")
    chat.add_argument("--system", default="", help="system prompt")
    chat.add_argument("--max-new-tokens", type=int, default=128)
    chat.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    chat.add_argument("--seed", type=int, default=0)
    bench = commands.add_parser("bench", help="tokens/s and weight memory per precision, and side-by-side throughput")
    bench.add_argument("model", nargs="?", default=DEFAULT_MODEL)
    bench.add_argument("--tokens", type=int, default=128)
    bench.add_argument("--space-default", action="store_true", help="also a random model with Qwen2.5-0.5B's exact config")
    demo = commands.add_parser("demo-parent", help="build (or find cached) the offline demo parent: SmolLM2 with a distilled persona")
    demo.add_argument("base", nargs="?", default=DEFAULT_MODEL)
    args = parser.parse_args(argv)
    try:
        if args.command == "demo-parent":
            return run_demo_parent(args.base)
        return run_chat(args) if args.command == "chat" else run_bench(args.model, args.tokens, args.space_default)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run_chat(args: argparse.Namespace) -> int:
    prompts = read_prompts(args.prompts_file, "--prompts-file") if args.prompts_file else None
    cache = ModelCache()  # the app's one way from a reference to a chat model: an endpoint is not loaded, a repeated model once
    models = [cache.get(ref, args.precision) for ref in args.models]
    for m in models:
        print(f"[{m.name}] {m.summary() if isinstance(m, EndpointModel) else m.report.summary()}", file=sys.stderr)
    settings = GenerationSettings(temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed)
    if prompts is not None:
        return run_prompt_set(models, prompts, settings, args.system)
    history = [{"role": "user", "content": args.prompt}]
    final = run_side_by_side(models, [history] * len(models), settings, system_prompt=args.system)
    failed = False
    for model, reply in zip(models, final, strict=True):
        print(f"=== {reply.model}")
        print(reply.text if not reply.error else f"error: {reply.error}")
        if reply.notice:
            print(f"(note: {reply.notice})")
        s = reply.stats
        served = f", served by {model.served_by}" if isinstance(model, EndpointModel) else ""
        print(f"--- {s.new_tokens} tokens, first token {s.first_token_s or 0:.2f} s, {s.tokens_per_s:.1f} tok/s{served}")
        failed |= bool(reply.error)
    return 1 if failed else 0


def run_prompt_set(models: list[ChatModel], prompts: list[PromptCase], settings: GenerationSettings, system: str) -> int:
    """Each prompt as a fresh conversation with every model side by side; one JSON line
    per reply per model, so a prompt set can be compared (or scored) from the shell."""
    failed = False
    for prompt in prompts:
        history = list(prompt.messages)
        for reply in run_side_by_side(models, [history] * len(models), settings, system_prompt=system):
            print(json.dumps({"model": reply.model, "prompt": prompt.text, "reply": reply.text, "tokens": reply.stats.new_tokens,
                              "seconds": round(reply.stats.seconds, 3), **({"error": reply.error} if reply.error else {})},
                             ensure_ascii=False), flush=True)
            failed |= bool(reply.error)
    return 1 if failed else 0


def run_demo_parent(base: str) -> int:
    from tqdm import tqdm

    from inference.demo_parent import build_demo_parent, demo_report

    bars: dict[str, tqdm] = {}

    def on_progress(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            bars[stage] = tqdm(total=total, desc=stage)
        bars[stage].update(done - bars[stage].n)

    started = time.perf_counter()
    folder = build_demo_parent(base, on_progress=on_progress)
    for bar in bars.values():
        bar.close()
    print(f"demo parent: {folder} ({time.perf_counter() - started:.1f} s)")
    print("held-out half of prompts/demo.jsonl, default sampling:")
    for name, quality in demo_report(folder).items():
        print(f"  {name}: {quality.line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
