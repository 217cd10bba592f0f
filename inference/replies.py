"""The chat's GPU boundary: one stateless call streams every pane's reply.

Its request and each snapshot it yields are plain data that pickle, so on a ZeroGPU Space
it runs in the forked GPU worker (core.zerogpu) and reports back through a queue, and
off ZeroGPU it runs here. The models come from the shared cache: the main process loads
them before the call, so a forked worker finds them in the memory it inherited. Closing
the stream (a Stop, a Clear, a visitor who left) ends the generation threads; on ZeroGPU
the `spaces` wrapper turns that close into its worker's stop event."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from core.zerogpu import gpu
from inference import cache
from inference.chat import Message
from inference.generation import GenerationSettings, Reply, stream_side_by_side
from inference.loading import LoadedModel

MIN_SECONDS, MAX_SECONDS = 10, 120  # a request's GPU duration: room for the transfer, and never a day's quota at once
OVERHEAD_S = 4.0  # the worker's start and the models' move to the GPU
GPU_BYTES_PER_S = 4e11  # a bandwidth-bound decode's rate before anything is measured; generous on purpose
MAX_TOKENS_PER_S = 60.0  # one Python loop's ceiling per pane, whatever the model size


@dataclass(frozen=True)
class PaneRequest:
    ref: str
    precision: str
    history: tuple[Message, ...]  # ends with the user turn to answer
    conversation: str = ""  # the pane's name across turns: its last turn's KV cache is reused (inference/kept_caches.py)


@dataclass(frozen=True)
class RepliesRequest:
    panes: tuple[PaneRequest, ...]
    settings: GenerationSettings
    system_prompt: str = ""


def tokens_per_s(pane: PaneRequest) -> float:
    """What a pane is expected to decode at: its last measured speed, else a bound from its
    weight bytes (decode reads every weight once per token)."""
    model = cache.MODELS.peek(pane.ref, pane.precision)
    if model is None or not isinstance(model, LoadedModel):
        return MAX_TOKENS_PER_S
    if model.measured_tokens_per_s:
        return model.measured_tokens_per_s
    return min(MAX_TOKENS_PER_S, GPU_BYTES_PER_S / max(model.report.weight_bytes, 1))


def seconds_needed(request: RepliesRequest) -> int:
    """The GPU duration to ask for: the panes' tokens at their speeds (they share one GPU),
    twice over for safety, plus the start, within [MIN_SECONDS, MAX_SECONDS]. ZeroGPU admits
    a call only if this fits the visitor's remaining quota, so asking less means more rounds."""
    tokens = request.settings.max_new_tokens
    decode = sum(tokens / tokens_per_s(pane) for pane in request.panes)
    return int(min(MAX_SECONDS, max(MIN_SECONDS, OVERHEAD_S + 2 * decode)))


@gpu(seconds_needed, instead="use an endpoint pane (it runs elsewhere, on no GPU quota)")
def stream_replies(request: RepliesRequest) -> Iterator[list[Reply]]:
    """Snapshots of every pane's reply (one Reply per pane, in order) as text arrives; the
    last has every reply done."""
    # One thread settles torch's thread pool before the panes' threads start: in a forked
    # worker torch rebuilds it lazily, and two pane threads racing to do so failed with
    # "Invalid thread pool!" (caffe2's pthreadpool, recreated after a fork).
    torch.set_num_threads(torch.get_num_threads())
    models = [cache.MODELS.get(pane.ref, pane.precision) for pane in request.panes]
    histories = [list(pane.history) for pane in request.panes]
    conversations = [pane.conversation for pane in request.panes]
    yield from stream_side_by_side(models, histories, request.settings, None, request.system_prompt, conversations)
