"""Many visitors at once: N = 1, 4, 8 gradio_client sessions against `python app.py` on the
offline default, each holding a 5-turn conversation in three panes (the bundled SmolLM2
as the merge in int8 beside two bf16 parents) through the `/chat` API, all at once.

    python benchmarks/load.py [--visitors 1 4 8] [--turns 5] [--tokens 32]

Per N it prints the wait from sending a message to its first token (p50, p95: the device
queue serves one chat at a time, so this is mostly queueing), aggregate tok/s over all
panes, errors, and whether every visitor's three histories hold exactly their own
messages, in order, each answered.
"""

from __future__ import annotations

import argparse
import re
import statistics
import threading
import time
from dataclasses import dataclass, field

import torch
from gradio_client import Client

from core.cpu import describe_cpu
from core.sources import cache_root
from testkit.app_process import app_process, text_of

MODEL = "bundled:SmolLM2-135M-Instruct"


@dataclass
class Visitor:
    number: int
    waits: list[float] = field(default_factory=list)  # per turn: message sent -> first token on the page
    tokens: int = 0
    errors: list[str] = field(default_factory=list)
    histories: list[list[dict]] = field(default_factory=list)

    def message(self, turn: int) -> str:
        return f"Visitor {self.number}, turn {turn}: describe an animal whose name starts with {'BCDFGHKLMPRST'[turn]}, in three sentences."

    def converse(self, url: str, turns: int, tokens: int) -> None:
        client = Client(url, verbose=False)
        for turn in range(turns):
            sent = time.perf_counter()
            first = None
            try:
                job = client.submit(self.message(turn), "", 0.0, 1.0, tokens, 0, MODEL, MODEL, MODEL, True, True, True, "int8",
                                    "bf16", 1.0, api_name="/chat")
                for update in job:
                    if first is None and any(text_of(bot[-1]) for bot in update[:3] if bot and bot[-1]["role"] == "assistant"):
                        first = time.perf_counter() - sent
                final = job.outputs()[-1]
            except Exception as exc:  # noqa: BLE001 -- counted and printed: the point is how many there are
                self.errors.append(f"turn {turn}: {exc.__class__.__name__}: {exc}")
                continue
            self.waits.append(first if first is not None else time.perf_counter() - sent)
            self.tokens += sum(int(m.group(1)) for m in (re.match(r"(\d+) tokens", s) for s in final[3:6]) if m)
            self.histories = final[:3]

    def own_history(self, turns: int) -> bool:
        """Each pane holds this visitor's messages, in order, each with a reply after it."""
        expected = [self.message(turn) for turn in range(turns)]
        for bot in self.histories or [[]]:
            users = [text_of(m) for m in bot if m["role"] == "user"]
            answers = [text_of(m) for m in bot if m["role"] == "assistant"]
            if users != expected or len(answers) != turns or not all(a.strip() for a in answers):
                return False
        return len(self.histories) == 3


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))] if ordered else float("nan")


def run(url: str, visitors: int, turns: int, tokens: int) -> None:
    people = [Visitor(number) for number in range(visitors)]
    started = time.perf_counter()
    threads = [threading.Thread(target=v.converse, args=(url, turns, tokens)) for v in people]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    waits = [w for v in people for w in v.waits]
    errors = [e for v in people for e in v.errors]
    own = sum(v.own_history(turns) for v in people)
    print(f"visitors={visitors} turns_each={turns} wall_s={seconds:.1f} first_token_wait_p50_s={statistics.median(waits):.2f} "
          f"p95_s={percentile(waits, 0.95):.2f} max_s={max(waits):.2f} aggregate_tok_s={sum(v.tokens for v in people) / seconds:.1f} "
          f"errors={len(errors)} own_histories={own}/{visitors}", flush=True)
    for error in errors[:5]:
        print(f"  error: {error}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--visitors", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    print(f"cpu: {describe_cpu()}; torch {torch.__version__}, {torch.get_num_threads()} threads; greedy, {args.tokens} new tokens "
          f"per pane", flush=True)
    with app_process(str(cache_root())) as (url, _):  # this machine's cache: the bundled model converted once
        run(url, 1, 1, 4)  # warm-up: the bundled model's first conversion and both precisions' loads
        for visitors in args.visitors:
            run(url, visitors, args.turns, args.tokens)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
