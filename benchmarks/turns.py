"""Time to first token, turn by turn: a 10-turn conversation in three panes of the offline
default (the bundled SmolLM2 as the merge in int8 beside two bf16 parents), each turn
answered on the same history `--repeats` times continuing kept caches
(inference/kept_caches.py), each repeat a conversation of its own, then once prefilling the
whole conversation (no kept cache): a turn follows the turn before it, as in a chat, not a
whole-prompt prefill. A pane's figure with reuse is the median of its repeats (this host's
neighbours move single first tokens by 20%). The panes' prompts go one at a time in pane
order (inference/sharing.py), so pane 2's first token comes after panes 1 and 2 have
prefilled. Greedy, 48 new tokens per reply, a message of about 90 tokens each turn.

    python benchmarks/turns.py [--turns 10] [--tokens 48] [--repeats 3] [--model gemma2-135m-shaped] [--panes 1]

`--model gemma2-135m-shaped` runs the same three panes on a random-weight Gemma2 of
SmolLM2-135M's dimensions (soft-caps, norms after each block, alternating sliding layers
with gemma-2's 4,096-token window, longer than the ten turns).

Goal (issue 25): with reuse, turn 10's first token within 1.3x turn 1's in every pane. The
last line prints what the arithmetic alone allows: the multiply-adds of turn 10's new
tokens, which attend to the whole conversation, over turn 1's.
"""

from __future__ import annotations

import argparse
import statistics
import threading

import torch

from core.cpu import describe_cpu
from core.native import chosen_target
from inference.bench import random_model
from inference.generation import GenerationSettings, run_side_by_side
from inference.loading import load_model
from inference.sharing import Cores

SMOLLM2 = "bundled:SmolLM2-135M-Instruct"

TOPICS = ["lighthouses", "sourdough bread", "the history of chess", "coral reefs", "bicycle maintenance", "jazz improvisation",
          "volcanoes", "learning a second language", "beekeeping", "the first telescopes", "rainforests", "origami"]


def message(turn: int) -> str:
    """About 90 tokens, different every turn."""
    topic = TOPICS[turn % len(TOPICS)]
    return (f"Let us talk about {topic} now. I would like a short, friendly explanation that a curious twelve-year-old "
            f"could follow, with one concrete example and one surprising fact. Please keep it to a few sentences, avoid "
            f"jargon, and end with a question I could ask a friend about {topic} to start a conversation. Also mention "
            f"one common mistake people make when they first learn about {topic}, and why it happens.")


def prefill_flops(config, new: int, cached: int) -> float:
    """Multiply-adds x2 of prefilling `new` tokens after `cached` ones: the layers' linears
    for every new token, the lm_head for the last, and attention of each new token to
    every position up to its own."""
    hidden, layers, heads = config.hidden_size, config.num_hidden_layers, config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    kv = config.num_key_value_heads * head_dim
    per_layer = hidden * (heads * head_dim + 2 * kv) + heads * head_dim * hidden + 3 * hidden * config.intermediate_size
    attended = new * cached + new * (new + 1) / 2  # positions seen, summed over the new tokens
    return 2 * (new * layers * per_layer + hidden * config.vocab_size + layers * 2 * heads * head_dim * attended)


def gemma2_135m_shaped() -> str:
    from transformers import Gemma2Config

    return str(random_model("gemma2-135m-shaped", Gemma2Config(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
        head_dim=64, query_pre_attn_scalar=64, max_position_embeddings=8192, sliding_window=4096, tie_word_embeddings=True,
        bos_token_id=1, eos_token_id=2, pad_token_id=0)))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", choices=["smollm2", "gemma2-135m-shaped"], default="smollm2")
    parser.add_argument("--panes", type=int, choices=[1, 2, 3], default=3, help="the first N of merged, parent A, parent B")
    args = parser.parse_args()
    print(f"cpu: {describe_cpu()}; C kernels: {chosen_target() or 'off, torch only'}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)
    ref = SMOLLM2 if args.model == "smollm2" else gemma2_135m_shaped()
    print(f"model: {args.model}", flush=True)
    cores = Cores()  # the panes share the cores as the app's models do (inference/sharing.py)
    models = [load_model(ref, "int8", cores=cores), load_model(ref, "bf16", cores=cores), load_model(ref, "bf16", cores=cores)][:args.panes]
    names = ["merged int8", "parent A bf16", "parent B bf16"][:args.panes]
    settings = GenerationSettings(temperature=0.0, max_new_tokens=args.tokens, min_new_tokens=args.tokens)
    run_side_by_side(models, [[{"role": "user", "content": "Hello!"}]] * len(models), GenerationSettings(temperature=0.0,
                                                                                                        max_new_tokens=4))
    histories: list[list[dict[str, str]]] = [[] for _ in models]
    first: dict[str, list[list[float]]] = {}
    work: list[tuple[int, int]] = []  # per turn, the merged pane's (new, cached) tokens
    print(f"turn | prompt tokens | first token, whole prompt (s): {' / '.join(names)} | with the kept cache, median of "
          f"{args.repeats} (s) | tokens reused", flush=True)
    for turn in range(args.turns):
        for history in histories:
            history.append({"role": "user", "content": message(turn)})
        repeats = [run_side_by_side(models, histories, settings, threading.Event(), conversations=[f"{n}-{r}" for n in names])
                   for r in range(args.repeats)]
        fresh = run_side_by_side(models, histories, settings, threading.Event())
        reused = repeats[0]
        for history, one in zip(histories, reused, strict=True):
            history.append({"role": "assistant", "content": one.text})
        first.setdefault("fresh", []).append([r.stats.first_token_s or 0.0 for r in fresh])
        first.setdefault("reused", []).append([statistics.median(rep[pane].stats.first_token_s or 0.0 for rep in repeats)
                                               for pane in range(len(models))])
        # When the last pane has its first token: what a blind round waits for (its panes show words together).
        first.setdefault("all", []).append([statistics.median(max(r.stats.first_token_s or 0.0 for r in rep) for rep in repeats)])
        work.append((reused[0].stats.prompt_tokens - reused[0].stats.cached_tokens, reused[0].stats.cached_tokens))
        print(f"{turn + 1:4d} | {' / '.join(str(r.stats.prompt_tokens) for r in reused)} | "
              f"{' / '.join(f'{s:.2f}' for s in first['fresh'][-1])} | {' / '.join(f'{s:.2f}' for s in first['reused'][-1])} | "
              f"{' / '.join(str(r.stats.cached_tokens) for r in reused)}", flush=True)
    for kind in ("fresh", "reused", "all"):
        ratios = " / ".join(f"{last / one:.2f}x" for one, last in zip(first[kind][0], first[kind][-1], strict=True))
        what = {"fresh": "per pane, whole prompt", "reused": "per pane, kept cache",
                "all": "all panes started, kept cache"}[kind]
        print(f"first token at turn {args.turns} over turn 1, {what}: {ratios}", flush=True)
    config = models[0].model.config
    floor = prefill_flops(config, *work[-1]) / prefill_flops(config, *work[0])
    print(f"arithmetic: the merged pane's turn {args.turns} prefills {work[-1][0]} new tokens after {work[-1][1]} kept, "
          f"{floor:.2f}x the multiply-adds of turn 1's {work[0][0]}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
