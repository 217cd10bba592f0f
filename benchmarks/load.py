"""Many visitors at once: N = 1, 4, 8, 16 visitors against `python app.py` on
the offline default, each holding a 5-turn conversation through the `/chat` API, all at
once; beside it, in the same run, llama.cpp's own server on the same model (Q8_0) with N
parallel slots and continuous batching, fed the same conversations.

    python benchmarks/load.py [--visitors 1 4 8 16] [--turns 5] [--tokens 32] [--panes 1|3]

--panes 1 (the default): the merge pane alone, the bundled SmolLM2 in int8, the model
llama.cpp's server runs too. --panes 3: the merge in int8 beside two bf16 parents (no
llama.cpp line: it serves one model). Per N and server it prints the wait from sending a
message to its first token (p50, p95), aggregate tok/s over all panes, errors, and
whether every visitor's histories hold exactly their own messages, in order, each
answered. llama-server is built once per machine (benchmarks/llama_server.py); where it
cannot be, the line says so.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import threading
import time
import urllib.request
from dataclasses import dataclass, field

import torch

from core.cpu import describe_cpu
from core.sources import bundled_gguf, cache_root
from testkit.app_process import app_process, text_of

try:
    import llama_server
except ImportError:  # run as a module from the repository root
    from benchmarks import llama_server

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

    def converse(self, url: str, turns: int, tokens: int, panes: int) -> None:
        """The conversation through the app's `/chat` API, over Gradio's plain HTTP route (the
        one curl uses): gradio_client's threads and diff-patching took 38% of a core at 8
        visitors, on the 2 cores the server runs on, where llama-server's clients are plain
        streams like this one. One session hash per visitor keeps its chat between turns."""
        session = f"load-visitor-{self.number}-{time.time_ns()}"
        parents_on = panes == 3
        for turn in range(turns):
            data = [self.message(turn), "", 0.0, 1.0, tokens, 0, MODEL, MODEL, MODEL, True, parents_on, parents_on,
                    "int8", "bf16", 1.0]
            sent, first, final = time.perf_counter(), None, None
            try:
                for event, update in gradio_stream(url, "chat", data, session):
                    if event == "error":
                        raise RuntimeError(f"the app answered with an error: {update}")
                    if first is None and any(text_of(bot[-1]) for bot in update[:3] if bot and bot[-1]["role"] == "assistant"):
                        first = time.perf_counter() - sent
                    if event == "complete":
                        final = update
                if final is None:
                    raise RuntimeError("the stream ended without its last view")
            except Exception as exc:  # noqa: BLE001 -- counted and printed: the point is how many there are
                self.errors.append(f"turn {turn}: {exc.__class__.__name__}: {exc}")
                continue
            self.waits.append(first if first is not None else time.perf_counter() - sent)
            self.tokens += sum(int(m.group(1)) for m in (re.match(r"(\d+) tokens", s) for s in final[3:6]) if m)
            self.histories = final[:panes]

    def converse_llama(self, url: str, turns: int, tokens: int, panes: int) -> None:
        """The same conversation through llama-server's OpenAI-compatible API, streamed."""
        history: list[dict] = []
        for turn in range(turns):
            history.append({"role": "user", "content": self.message(turn)})
            body = json.dumps({"messages": history, "max_tokens": tokens, "temperature": 0.0, "stream": True,
                               "stream_options": {"include_usage": True}}).encode()
            request = urllib.request.Request(f"{url}/v1/chat/completions", body, {"Content-Type": "application/json"})
            sent, first, text, counted = time.perf_counter(), None, "", None
            try:
                with urllib.request.urlopen(request, timeout=600) as answer:
                    for line in answer:
                        if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
                            continue
                        chunk = json.loads(line[6:])
                        if chunk.get("usage"):
                            counted = chunk["usage"]["completion_tokens"]
                        delta = (chunk.get("choices") or [{}])[0].get("delta", {}).get("content") or ""
                        if delta and first is None:
                            first = time.perf_counter() - sent
                        text += delta
            except Exception as exc:  # noqa: BLE001 -- counted and printed
                self.errors.append(f"turn {turn}: {exc.__class__.__name__}: {exc}")
                history.pop()
                continue
            self.waits.append(first if first is not None else time.perf_counter() - sent)
            self.tokens += counted or 0
            history.append({"role": "assistant", "content": text})
        self.histories = [history]

    def own_history(self, turns: int, panes: int) -> bool:
        """Each pane holds this visitor's messages, in order, each with a reply after it."""
        expected = [self.message(turn) for turn in range(turns)]
        for bot in self.histories or [[]]:
            users = [text_of(m) for m in bot if m["role"] == "user"]
            answers = [text_of(m) for m in bot if m["role"] == "assistant"]
            if users != expected or len(answers) != turns or not all(a.strip() for a in answers):
                return False
        return len(self.histories) == panes


def gradio_stream(url: str, api: str, data: list, session: str):
    """(event, data) for each view a Gradio event streams: POST /gradio_api/call/<api>, then
    read its server-sent events."""
    body = json.dumps({"data": data, "session_hash": session}).encode()
    request = urllib.request.Request(f"{url}gradio_api/call/{api}", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        event_id = json.loads(answer.read())["event_id"]
    event = None
    with urllib.request.urlopen(f"{url}gradio_api/call/{api}/{event_id}", timeout=600) as answer:
        for line in answer:
            if line.startswith(b"event: "):
                event = line[7:].strip().decode()
            elif line.startswith(b"data: ") and event in ("generating", "complete", "error"):
                yield event, json.loads(line[6:])
                if event in ("complete", "error"):
                    return


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))] if ordered else float("nan")


def run(server: str, url: str, visitors: int, turns: int, tokens: int, panes: int) -> None:
    people = [Visitor(number) for number in range(visitors)]
    started = time.perf_counter()
    converse = Visitor.converse_llama if server == "llama-server" else Visitor.converse
    threads = [threading.Thread(target=converse, args=(v, url, turns, tokens, panes)) for v in people]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    waits = [w for v in people for w in v.waits]
    errors = [e for v in people for e in v.errors]
    own = sum(v.own_history(turns, 1 if server == "llama-server" else panes) for v in people)
    p50, p95 = (statistics.median(waits), percentile(waits, 0.95)) if waits else (float("nan"),) * 2
    tokens_per_s = sum(v.tokens for v in people) / seconds
    print(f"{server:<12} visitors={visitors:<2} turns_each={turns} wall_s={seconds:.1f} first_token_wait_p50_s={p50:.2f} "
          f"p95_s={p95:.2f} aggregate_tok_s={tokens_per_s:.1f} errors={len(errors)} own_histories={own}/{visitors}", flush=True)
    for error in errors[:5]:
        print(f"  error: {error}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--visitors", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--panes", type=int, choices=[1, 3], default=1)
    args = parser.parse_args()
    print(f"cpu: {describe_cpu()}; torch {torch.__version__}, {torch.get_num_threads()} threads; greedy, up to {args.tokens} new "
          f"tokens per pane, {args.panes} pane(s) per visitor ({'the merge in int8' if args.panes == 1 else 'int8 merge, bf16 parents'})",
          flush=True)
    gguf = None
    if args.panes == 1:
        try:
            llama_server.build()
            gguf = llama_server.q8_model(bundled_gguf(MODEL.split(":", 1)[1]))
        except Exception as exc:  # noqa: BLE001 -- the anchor is optional: say why it is missing
            print(f"llama-server not measured: {exc.__class__.__name__}: {exc}", flush=True)
    for visitors in args.visitors:
        with app_process(str(cache_root())) as (url, _):  # this machine's cache: the bundled model converted once
            run("slerp-arena", url, 1, 1, 4, args.panes)  # warm-up: the loads, the kernels' first measurements
            run("slerp-arena", url, visitors, args.turns, args.tokens, args.panes)
        if gguf is not None:
            with llama_server.server(gguf, slots=visitors, threads=torch.get_num_threads()) as url:
                run("llama-server", url, 1, 1, 4, 1)
                run("llama-server", url, visitors, args.turns, args.tokens, 1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
