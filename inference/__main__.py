"""CLI.

python -m inference chat MODEL [MODEL …] --precision auto|fp8|int8|bf16 --prompt "…"
python -m inference bench [MODEL] [--tokens 128]
python -m inference fits-where          # which seed pairs' three panes fit which Hugging Face hardware
"""

from __future__ import annotations

import argparse
import sys

from core.errors import UserError
from core.sources import DEFAULT_MODEL, ENDPOINT_FORM
from inference import capacity
from inference.bench import run_bench
from inference.cache import ModelCache
from inference.endpoint import EndpointModel
from inference.generation import GenerationSettings, run_side_by_side
from inference.loading import PRECISIONS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference")
    commands = parser.add_subparsers(dest="command", required=True)
    chat = commands.add_parser("chat", help="send one prompt to one or more models, side by side")
    chat.add_argument("models", nargs="+", help=f"local folders, Hub ids, .gguf files, {DEFAULT_MODEL}, "
                      f"or OpenAI-compatible endpoints {ENDPOINT_FORM} (API key: SLERP_ARENA_ENDPOINT_KEY or OPENAI_API_KEY)")
    chat.add_argument("--precision", default="auto", choices=PRECISIONS)
    chat.add_argument("--prompt", required=True, help="the message (a prompt set: python -m evaluation replies)")
    chat.add_argument("--system", default="", help="system prompt")
    chat.add_argument("--max-new-tokens", type=int, default=128)
    chat.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    chat.add_argument("--seed", type=int, default=0)
    bench = commands.add_parser("bench", help="tokens/s and weight memory per precision, and side-by-side throughput")
    bench.add_argument("model", nargs="?", default=DEFAULT_MODEL)
    bench.add_argument("--tokens", type=int, default=128)
    bench.add_argument("--space-default", action="store_true", help="also a random model with Qwen2.5-0.5B's exact config")
    bench.add_argument("--gemma2-shaped", action="store_true",
                       help="also random models of gemma-2-2b's config and of a Llama of the same size, side by side")
    commands.add_parser("fits-where", help="a Markdown table: the three chat panes of the seed pairs on Hugging Face hardware")
    args = parser.parse_args(argv)
    try:
        if args.command == "fits-where":
            print(capacity.markdown_table())
            return 0
        return run_chat(args) if args.command == "chat" else run_bench(args.model, args.tokens, args.space_default, args.gemma2_shaped)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run_chat(args: argparse.Namespace) -> int:
    cache = ModelCache()  # the app's one way from a reference to a chat model: an endpoint is not loaded, a repeated model once
    models = [cache.get(ref, args.precision) for ref in args.models]
    for m in models:
        print(f"[{m.name}] {m.summary() if isinstance(m, EndpointModel) else m.report.summary()}", file=sys.stderr)
    settings = GenerationSettings(temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed)
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


if __name__ == "__main__":
    sys.exit(main())
