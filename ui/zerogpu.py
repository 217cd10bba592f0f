"""ZeroGPU Spaces: a GPU is attached only inside functions decorated with `@spaces.GPU`.

On such a Space (the `spaces` package importable and SPACES_ZERO_GPU set, as Hugging
Face sets it on ZeroGPU hardware) the handlers that run models (merge, chat, regenerate,
t-preview, t-sweep) are wrapped in `spaces.GPU(duration=…)`, so the GPU is attached for at most
`duration` seconds per call. Everywhere else the handler is returned unchanged.
"""

from __future__ import annotations

import importlib.util
import os

MERGE_SECONDS = 300  # a merge of two 7B parents fits in five minutes at disk speed
CHAT_SECONDS = 120  # one round of replies in three panes
SWEEP_SECONDS = 240  # a t-sweep: both parents answer, then a merge and a scoring pass per t


def on_zerogpu() -> bool:
    return importlib.util.find_spec("spaces") is not None and os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true")


def gpu(duration: int):
    """`@gpu(seconds)`: spaces.GPU(duration=seconds) on ZeroGPU, nothing elsewhere."""
    def wrap(handler):
        if not on_zerogpu():
            return handler
        import spaces

        return spaces.GPU(duration=duration)(handler)
    return wrap
