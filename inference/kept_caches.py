"""A conversation's next turn reuses what its last turn computed, as llama.cpp's server
keeps a slot's prompt cache: a finished reply's keys and values are kept, with the tokens
they hold, under the conversation's name (one chat pane of one visitor), and the next
prompt of that conversation prefills only what follows the tokens both share.

- Reuse is decided by tokens, so it happens exactly when it is valid. A Clear, another
  system prompt, a Regenerate or the oldest turns dropped to fit the context change the
  tokens, and only the start both prompts share is kept. Each loaded model's scheduler
  owns its store (inference/scheduler.py), so another model or precision never sees it,
  and the store goes with the model.
- A taken cache belongs to one reply until it is kept again, so no two replies write into
  one; conversations never share caches (nothing of one visitor's timing shows in another's).
- What a model keeps is bounded by a share of the memory the guard keeps free for KV
  caches and activations (inference/loading.py); the least recently used conversation
  goes first.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import psutil
import torch

KEPT_SHARE = 0.05  # of RAM per model: three panes' models keep less than the 20% the memory guard keeps free
REUSE_ENV = "SLERP_ARENA_KV_REUSE"  # "0": every turn prefills the whole conversation (for comparison)

Layers = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys and values [kv_heads, capacity, head_dim]


def common_length(a: list[int], b: list[int]) -> int:
    """How many tokens `a` and `b` share from the start."""
    n = min(len(a), len(b))
    differ = (torch.tensor(a[:n]) != torch.tensor(b[:n])).nonzero()
    return int(differ[0]) if len(differ) else n


@dataclass
class _Kept:
    tokens: list[int]  # what positions 0..len-1 of the layers hold
    layers: Layers

    @property
    def nbytes(self) -> int:
        return sum(k.nbytes + v.nbytes for k, v in self.layers)


class KeptCaches:
    def __init__(self, budget: int | None = None):
        """`budget`: bytes the model's kept caches may take together (None: KEPT_SHARE of RAM)."""
        self.budget = int(KEPT_SHARE * psutil.virtual_memory().total) if budget is None else budget
        self._kept: OrderedDict[str, _Kept] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    def take(self, conversation: str, prompt: list[int]) -> tuple[Layers, int] | None:
        """The conversation's kept layers and how many of `prompt`'s first tokens they hold
        already (at least one token is left to compute, for the next token's logits); None
        where nothing can be reused. The layers leave the store until `keep`."""
        if not conversation or os.environ.get(REUSE_ENV) == "0":
            return None
        with self._lock:
            kept = self._kept.pop(conversation, None)
        if kept is None:
            return None
        reused = common_length(kept.tokens, prompt[:-1])
        return (kept.layers, reused) if reused else None

    def keep(self, conversation: str, tokens: list[int], layers: Layers) -> None:
        """Keep the layers holding `tokens` for the conversation's next turn."""
        if not conversation:
            return
        kept = _Kept(tokens, layers)
        with self._lock:
            self._kept[conversation] = kept
            self._kept.move_to_end(conversation)
            total = sum(k.nbytes for k in self._kept.values())
            while total > self.budget:
                _, dropped = self._kept.popitem(last=False)
                total -= dropped.nbytes

    def conversations(self) -> list[str]:
        """Least recently used first."""
        with self._lock:
            return list(self._kept)

    def nbytes(self) -> int:
        with self._lock:
            return sum(k.nbytes for k in self._kept.values())
