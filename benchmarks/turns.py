"""Time to first token, turn by turn: a 10-turn conversation in three panes of the offline
default (the bundled SmolLM2 as the merge in int8 beside two bf16 parents), each turn
answered twice in this run, on the same history: once prefilling the whole conversation
(no kept cache) and once continuing each pane's kept cache (inference/kept_caches.py).
Greedy, 48 new tokens per reply, a message of about 90 tokens each turn.

    python benchmarks/turns.py [--turns 10] [--tokens 48]

Goal (issue 25): with reuse, turn 10's first token within 1.3x turn 1's in every pane.
"""

from __future__ import annotations

import argparse
import threading

import torch

from core.cpu import describe_cpu
from core.native import chosen_target
from inference.generation import GenerationSettings, run_side_by_side
from inference.loading import load_model

TOPICS = ["lighthouses", "sourdough bread", "the history of chess", "coral reefs", "bicycle maintenance", "jazz improvisation",
          "volcanoes", "learning a second language", "beekeeping", "the first telescopes", "rainforests", "origami"]


def message(turn: int) -> str:
    """About 90 tokens, different every turn."""
    topic = TOPICS[turn % len(TOPICS)]
    return (f"Let us talk about {topic} now. I would like a short, friendly explanation that a curious twelve-year-old "
            f"could follow, with one concrete example and one surprising fact. Please keep it to a few sentences, avoid "
            f"jargon, and end with a question I could ask a friend about {topic} to start a conversation. Also mention "
            f"one common mistake people make when they first learn about {topic}, and why it happens.")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=48)
    args = parser.parse_args()
    print(f"cpu: {describe_cpu()}; C kernels: {chosen_target() or 'off, torch only'}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)
    ref = "bundled:SmolLM2-135M-Instruct"
    models = [load_model(ref, "int8"), load_model(ref, "bf16"), load_model(ref, "bf16")]
    names = ["merged int8", "parent A bf16", "parent B bf16"]
    settings = GenerationSettings(temperature=0.0, max_new_tokens=args.tokens, min_new_tokens=args.tokens)
    run_side_by_side(models, [[{"role": "user", "content": "Hello!"}]] * 3, GenerationSettings(temperature=0.0, max_new_tokens=4))
    histories: list[list[dict[str, str]]] = [[], [], []]
    first: dict[str, list[list[float]]] = {}
    print("turn | prompt tokens | first token, whole prompt (s): " + " / ".join(names) + " | with the kept cache (s) | "
          "tokens reused", flush=True)
    for turn in range(args.turns):
        for history in histories:
            history.append({"role": "user", "content": message(turn)})
        fresh = run_side_by_side(models, histories, settings, threading.Event())
        reused = run_side_by_side(models, histories, settings, threading.Event(), conversations=["merged", "a", "b"])
        for history, one in zip(histories, reused, strict=True):
            history.append({"role": "assistant", "content": one.text})
        for kind, replies in (("fresh", fresh), ("reused", reused)):
            first.setdefault(kind, []).append([r.stats.first_token_s or 0.0 for r in replies])
        print(f"{turn + 1:4d} | {' / '.join(str(r.stats.prompt_tokens) for r in reused)} | "
              f"{' / '.join(f'{r.stats.first_token_s:.2f}' for r in fresh)} | "
              f"{' / '.join(f'{r.stats.first_token_s:.2f}' for r in reused)} | "
              f"{' / '.join(str(r.stats.cached_tokens) for r in reused)}", flush=True)
    for kind in ("fresh", "reused"):
        ratios = " / ".join(f"{last / one:.2f}x" for one, last in zip(first[kind][0], first[kind][-1], strict=True))
        print(f"first token at turn {args.turns} over turn 1, {kind}: {ratios}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
