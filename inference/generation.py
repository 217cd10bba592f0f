"""Stream replies from one to four models at once, each in its own thread.

A model served elsewhere (inference/endpoint.py) streams its own reply through the same
interface (`answer`), so it runs beside the in-process ones.

Every model gets the same sampling settings and seed. Sampling is done by our own
logits processor with a per-reply torch.Generator, because transformers samples from
the global RNG, which concurrent threads would share (and so never reproduce). Stop
sets an Event that a StoppingCriteria checks at every token, so the generation threads
really end; Gradio cancelling the consumer alone would leave them running.
"""

from __future__ import annotations

import atexit
import collections
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation import BaseStreamer

from core.errors import UserError
from inference.chat import Message, build_prompt
from inference.decoder import processors_for
from inference.loading import LoadedModel
from inference.scheduler import Sequence

MAX_MODELS = 4
STOP_AT_EXIT_S = 10.0  # how long an exiting process waits for each stopped reply thread (a stopped one ends within a token)
# Snapshots come at most this often (the first at once): each one costs the page's server a
# render and a message per visitor, and with many visitors at once that work took a core
# from the decoding (docs/benchmarks.md). 20 a second still reads as a smooth stream.
FRAME_S = 0.05


@dataclass(frozen=True)
class GenerationSettings:
    """Defaults: the app's sampling, chosen by `python -m quality --grid` on the seen half
    of prompts/demo.jsonl (original, demo parent and their merge; README "Sampling
    defaults"): the only setting with no loop and no profanity in any of the three models
    and the best on-topic share. Plain greedy looped on 4 of 19 prompts (the original),
    and the old default (0.7, 1.0, no penalty) looped once in the merge."""
    temperature: float = 0.5  # 0 means greedy
    top_p: float = 0.9
    top_k: int = 0  # 0 means off
    max_new_tokens: int = 256
    repetition_penalty: float = 1.2
    seed: int = 0
    min_new_tokens: int = 0  # benchmarks set it to max_new_tokens so every reply has the same length


@dataclass
class ReplyStats:
    new_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0  # of the prompt, taken from the conversation's last turn (not computed again)
    first_token_s: float | None = None  # time to first token
    seconds: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        decode = self.seconds - (self.first_token_s or 0.0)
        return (self.new_tokens - 1) / decode if self.new_tokens > 1 and decode > 0 else 0.0


@dataclass
class Reply:
    model: str
    text: str = ""
    done: bool = False
    stopped: bool = False
    error: str = ""
    notice: str = ""
    stats: ReplyStats = field(default_factory=ReplyStats)


class ServedModel(Protocol):
    """A model that streams its own replies (an endpoint): what generate_reply does for a LoadedModel."""
    name: str

    def answer(self, history: list[Message], settings: GenerationSettings, stop: threading.Event, system_prompt: str = "",
               on_text=lambda text: None, reply: Reply | None = None) -> Reply: ...


ChatModel = LoadedModel | ServedModel


class SeededSampler(LogitsProcessor):
    """temperature / top-k / top-p sampling with a private generator; the chosen token is
    returned as the only finite score, so generate's greedy step picks it."""

    def __init__(self, settings: GenerationSettings):
        self.settings = settings
        self.generator = torch.Generator().manual_seed(settings.seed)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        s = self.settings
        logits = scores.float() / s.temperature
        if s.top_k > 0:
            kth = torch.topk(logits, min(s.top_k, logits.shape[-1]), dim=-1).values[..., -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if s.top_p < 1.0:
            sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
            cumulative = sorted_logits.softmax(-1).cumsum(-1)
            remove = cumulative - sorted_logits.softmax(-1) > s.top_p  # keep the token that crosses top_p
            logits = logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
        chosen = torch.multinomial(logits.softmax(-1).cpu(), 1, generator=self.generator).to(scores.device)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter(-1, chosen, 0.0)


class EventStop(StoppingCriteria):
    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _ReplyStreamer(BaseStreamer):
    """Receives token ids from generate and reports the growing reply.

    Incremental detokenization (as vLLM does it): each step decodes only a short window of
    tokens, from `prefix` (text already emitted) to the end, and appends what the last
    tokens add; re-decoding the whole reply made each token cost more than the last. The
    window starts a few tokens back so that tokenizers which merge across token
    boundaries (byte-level BPE, SentencePiece's leading spaces) decode as in one piece."""

    def __init__(self, tokenizer, on_text, started: float, stats: ReplyStats):
        self.tokenizer, self.on_text, self.started, self.stats = tokenizer, on_text, started, stats
        self.tokens: list[int] = []
        self.text = ""
        self.prompt_seen = False
        self.prefix = 0  # window start
        self.read = 0  # tokens whose text is already in self.text

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate first hands over the prompt
            self.prompt_seen = True
            return
        self.tokens.extend(value.reshape(-1).tolist())
        self.stats.new_tokens = len(self.tokens)
        if self.stats.first_token_s is None:
            self.stats.first_token_s = time.perf_counter() - self.started
        self._advance(final=False)

    def end(self) -> None:
        self._advance(final=True)

    def _advance(self, final: bool) -> None:
        decode = self.tokenizer.decode
        before = decode(self.tokens[self.prefix:self.read], skip_special_tokens=True)
        after = decode(self.tokens[self.prefix:], skip_special_tokens=True)
        if len(after) <= len(before) or (after.endswith("\ufffd") and not final):  # half a multi-byte character
            return
        self.text += after[len(before):]
        self.prefix, self.read = max(self.read - 4, 0), len(self.tokens)
        self.on_text(self.text)


def generate_reply(loaded: LoadedModel, history: list[Message], settings: GenerationSettings, stop: threading.Event,
                   system_prompt: str = "", on_text=lambda text: None, reply: Reply | None = None,
                   conversation: str = "") -> Reply:
    """One reply, streamed to `on_text(full_text_so_far)` and filled into `reply` as it
    grows (text and stats); errors are returned in the reply, not raised. `conversation`
    names the chat this reply continues, whose last turn's cache it may reuse. On the lean
    loop the reply joins the model's running batch (inference/scheduler.py)."""
    reply = reply or Reply(loaded.name)

    def show(text: str) -> None:
        reply.text = text
        on_text(text)

    started = time.perf_counter()
    try:
        prompt = build_prompt(loaded.tokenizer, history, system_prompt, loaded.context_length, settings.max_new_tokens)
        reply.notice = prompt.notice
        reply.stats.prompt_tokens = len(prompt.input_ids)
        model = loaded.model
        streamer = _ReplyStreamer(loaded.tokenizer, show, started, reply.stats)
        max_new_tokens = min(settings.max_new_tokens, loaded.context_length - len(prompt.input_ids))
        if max_new_tokens < settings.max_new_tokens:
            reply.notice = "; ".join(filter(None, [reply.notice, f"reply limited to {max_new_tokens} tokens by the context"]))
        eos = eos_ids(loaded)
        sampler = SeededSampler(settings) if settings.temperature > 0 else None
        min_new = min(settings.min_new_tokens, max_new_tokens)
        decoder = loaded.decoder
        with torch.inference_mode(), loaded.in_use():  # a busy model is never evicted from a cache
            if decoder is not None:
                processors = processors_for(len(prompt.input_ids), settings.repetition_penalty, min_new, eos, sampler)
                _, reply.stats.cached_tokens = decoder.scheduler.run(
                    Sequence(prompt.input_ids, max_new_tokens, processors, frozenset(eos), stop, streamer, conversation))
            else:
                pad = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else eos[0]
                input_ids = torch.tensor([prompt.input_ids], device=next(model.parameters()).device)
                with loaded.cores.decoding():
                    model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                                   max_new_tokens=max_new_tokens, min_new_tokens=min_new or None,
                                   repetition_penalty=settings.repetition_penalty, eos_token_id=eos, pad_token_id=pad,
                                   logits_processor=LogitsProcessorList([sampler] if sampler else []),
                                   stopping_criteria=StoppingCriteriaList([EventStop(stop)]), streamer=streamer,
                                   temperature=None, top_p=None, top_k=None)
        reply.text = streamer.text
        reply.stopped = stop.is_set()
    except UserError as exc:
        reply.error = str(exc)
    except Exception as exc:  # noqa: BLE001 -- shown in this model's pane; the other panes go on
        reply.error = f"{loaded.name}: generation failed ({exc.__class__.__name__}: {exc})"
    reply.stats.seconds = time.perf_counter() - started
    reply.done = True
    return reply


def eos_ids(loaded: LoadedModel) -> list[int]:
    ids = []
    configured = getattr(loaded.model.generation_config, "eos_token_id", None)
    ids.extend(configured if isinstance(configured, list) else [configured] if configured is not None else [])
    if loaded.tokenizer.eos_token_id is not None:
        ids.append(loaded.tokenizer.eos_token_id)
    return list(dict.fromkeys(ids)) or [0]


def stream_side_by_side(models: list[ChatModel], histories: list[list[Message]], settings: GenerationSettings,
                        stop: threading.Event | None = None, system_prompt: str = "",
                        conversations: list[str] | None = None) -> Iterator[list[Reply]]:
    """Yield snapshots (one Reply per model, in order) as any model produces text; the
    last snapshot has every reply done. `histories[i]` is model i's own conversation, and
    `conversations[i]` its name, under which its cache is kept for the next turn."""
    if not 1 <= len(models) <= MAX_MODELS:
        raise UserError("models", f"{len(models)} models selected", f"choose 1 to {MAX_MODELS}")
    if len(histories) != len(models):
        raise UserError("histories", "one conversation per model is needed", "pass a history for each model")
    stop = stop or threading.Event()
    conversations = conversations or [""] * len(models)
    replies = [Reply(m.name) for m in models]
    updates: queue.Queue[int | None] = queue.Queue()

    def worker(index: int) -> None:
        model, on_text = models[index], lambda _: updates.put(index)
        if isinstance(model, LoadedModel):
            generate_reply(model, histories[index], settings, stop, system_prompt, on_text=on_text, reply=replies[index],
                           conversation=conversations[index])
        else:  # served elsewhere: it streams its own reply
            model.answer(histories[index], settings, stop, system_prompt, on_text=on_text, reply=replies[index])
        updates.put(None)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True, name=f"generate {m.name}") for i, m in enumerate(models)]
    for thread in threads:
        thread.start()
    running = len(threads)

    def stop_at_exit() -> None:
        """The reply threads are daemons, and a process that ended under one mid-matmul
        aborted ("terminate called without an active exception", exit 134), seen when the
        app was stopped mid-reply: stopped and joined first."""
        stop.set()
        for thread in threads:
            thread.join(STOP_AT_EXIT_S)

    atexit.register(stop_at_exit)  # the interpreter's exit holds the streams running, not a set of ours
    try:
        shown_at = -FRAME_S
        while running:
            # Every update until the frame's end is folded into one snapshot (each shows the
            # whole reply so far): a consumer slower than the decoding, such as a page on a
            # slow link, would otherwise replay stale snapshots after the replies ended, and
            # a Clear in the Chromium test waited out 15 s of them.
            running -= updates.get() is None
            while running and (left := shown_at + FRAME_S - time.monotonic()) > 0:
                try:
                    running -= updates.get(timeout=left) is None
                except queue.Empty:
                    break
            while not updates.empty():
                running -= updates.get_nowait() is None
            shown_at = time.monotonic()
            # Copies: the worker threads keep writing into the live objects.
            yield [replace(r, stats=replace(r.stats)) for r in replies]
    finally:
        if running:  # the consumer went away (a Gradio cancel): end the threads too
            stop.set()
        for thread in threads:
            thread.join()
        atexit.unregister(stop_at_exit)


def run_side_by_side(models: list[ChatModel], histories: list[list[Message]], settings: GenerationSettings,
                     stop: threading.Event | None = None, system_prompt: str = "",
                     conversations: list[str] | None = None) -> list[Reply]:
    """The final snapshot of stream_side_by_side (for callers that do not stream)."""
    return collections.deque(stream_side_by_side(models, histories, settings, stop, system_prompt, conversations), maxlen=1)[0]
