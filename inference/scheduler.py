"""Continuous batching: one scheduler per lean decoder owns that model's decode steps.

Every reply of the model, whoever asked for it (any visitor, any pane, two panes of one
visitor in a self-merge), joins the running batch at the next step and leaves it when it
ends, as in llama.cpp's server and vLLM. A step reads each weight once for the whole
batch (csrc/decode_step.c's decode_batch), which is the only way past the memory's speed:
one stream already reads the weights about as fast as the memory delivers them.

A new reply's prompt is prefilled PREFILL_CHUNK tokens at a time, one chunk between two
decode steps, so the replies already streaming pause for a chunk, not for a whole
conversation; with nothing streaming, at once. A short prompt (a chat's new turn after
its kept cache) goes through the C step as rows of its own (decoder.prompt_in_c), and the
replies streaming take their step in the same pass, as llama.cpp's server batches prompt
and decode tokens together. A prompt keeps its place among the process's prompts
(sharing.py) from its first chunk to its last: the models' prompts go one at a time, in
the order they came, as before batching. Sampling, seed, repetition penalty, stop and the
end of a reply are each reply's own: its processors see only its tokens, and each row of a
step is computed as that reply alone would be, so a greedy reply is the same tokens in a
batch or alone.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
from collections import deque
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessorList

from inference.kept_caches import KeptCaches
from inference.sharing import Cores, Place

PREFILL_CHUNK = 256  # prompt tokens between two decode steps
MAX_BATCH = 16  # replies in one step; more wait to join (a pass of csrc/decode_step.c takes 64 rows, a prompt's with them)
STOP_AT_EXIT_S = 10.0  # how long an exiting process waits for the thread (it ends within a step)
IDLE_S = 5.0  # the thread ends after this long without work, and starts again with the next reply


@dataclass(eq=False)
class Sequence:
    """One reply as the scheduler runs it."""
    prompt: list[int]
    max_new_tokens: int
    processors: LogitsProcessorList
    eos: frozenset[int]
    stop: threading.Event
    streamer: object  # put(token ids), end(): as transformers' streamers
    conversation: str = ""  # whose kept cache it continues and is kept under (kept_caches.py)
    ids: torch.Tensor = field(init=False)
    cache: list | None = None
    reused: int = 0  # prompt tokens taken from the kept cache
    filled: int = 0  # prompt tokens in the cache so far
    position: int = 0  # where the last chosen token sits
    finished: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    place: Place | None = None  # its prompt's place among the process's prompts (sharing.py)

    def __post_init__(self) -> None:
        self.ids = torch.empty(1, len(self.prompt) + self.max_new_tokens, dtype=torch.long)
        self.ids[0, :len(self.prompt)] = torch.tensor(self.prompt)

    @property
    def new_tokens(self) -> list[int]:
        return self.ids[0, len(self.prompt):self.position + 1].tolist() if self.position else []


class Scheduler:
    """The decode steps of one model (a LeanDecoder): `run` a reply, from any thread."""

    def __init__(self, decoder, cores: Cores) -> None:
        self.decoder = decoder
        self.cores = cores  # shared with the other models of its cache: prompts one at a time (sharing.py)
        self.kept = KeptCaches()  # its conversations' caches, each taken by its next turn (a forked child inherits them)
        self._start_afresh()

    def _start_afresh(self) -> None:
        """No thread, no replies: at the start, and in a forked child (a ZeroGPU worker),
        where the parent's thread, its replies and the state of its lock did not come along."""
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._waiting: deque[Sequence] = deque()
        self._thread: threading.Thread | None = None
        self._exiting = False

    def _stop_at_exit(self) -> None:
        """The thread is a daemon, and a process that ended under it mid-step aborted
        ("terminate called without an active exception", exit 134): it ends first, and
        the replies it held end with an error."""
        if self._pid != os.getpid():  # a forked child's copy: the thread (and the lock's state) are the parent's
            return
        with self._cond:
            self._exiting = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(STOP_AT_EXIT_S)

    def _ended(self) -> None:
        """The thread is ending (under the lock): the next reply starts another."""
        self._thread = None
        atexit.unregister(self._stop_at_exit)

    def run(self, sequence: Sequence) -> tuple[list[int], int]:
        """Decode `sequence` with whatever else this model is decoding; its streamer gets the
        prompt, then each token. Returns the new tokens and how many prompt tokens came
        from the conversation's kept cache."""
        if self._pid != os.getpid():
            self._start_afresh()
        with self._cond:  # its place taken in the order it joins: the prompts are prefilled in that order
            (sequence.place,) = self.cores.queue_prompts(1, self)
            self._waiting.append(sequence)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="decode steps", daemon=True)
                self._thread.start()
                atexit.register(self._stop_at_exit)
            self._cond.notify()
        sequence.finished.wait()
        if sequence.error is not None:
            raise sequence.error
        return sequence.new_tokens, sequence.reused

    def _loop(self) -> None:
        prefill: deque[Sequence] = deque()  # admitted, prompt not all in the cache yet
        batch: list[Sequence] = []  # decoding
        try:
            self._serve(prefill, batch)
        except BaseException as exc:  # noqa: BLE001 -- every reply it held (or that waits) ends with it; the next starts a thread
            with self._cond:
                lost = [*prefill, *batch, *self._waiting]
                self._waiting.clear()
                self._ended()
            self._fail(lost, exc)

    def _serve(self, prefill: deque[Sequence], batch: list[Sequence]) -> None:
        counted = False  # in the replies sharing the cores (sharing.py) while there is work
        with contextlib.ExitStack() as share, torch.inference_mode():
            while True:
                with self._cond:
                    while not (self._waiting or prefill or batch or self._exiting):
                        share.close()  # idle: this model's share of the cores goes to the others
                        counted = False
                        if not self._cond.wait(IDLE_S) and not self._waiting:
                            self._ended()
                            return
                    if self._exiting:
                        raise RuntimeError("the app is shutting down")
                    while self._waiting and len(prefill) + len(batch) < MAX_BATCH:
                        prefill.append(self._waiting.popleft())
                if not counted:
                    share.enter_context(self.cores.decoding())
                    counted = True
                stepped = False
                if prefill:
                    stepped = self._prefill(prefill, batch)
                    batch += [s for s in prefill if s.position and not s.finished.is_set()]
                    still = [s for s in prefill if not s.position and not s.finished.is_set()]
                    prefill.clear()
                    prefill.extend(still)
                batch[:] = [s for s in batch if not s.finished.is_set()]
                if batch and not stepped:
                    self.cores.before_a_token(self)  # a prompt of another model first (sharing.py)
                    self._step(batch)
                    batch[:] = [s for s in batch if not s.finished.is_set()]

    def _guarded(self, sequence: Sequence, work) -> bool:
        try:
            return work(sequence)
        except BaseException as exc:  # noqa: BLE001 -- raised in the reply's own thread by run()
            self._fail([sequence], exc)
            return False

    def _prefill(self, waiting: deque[Sequence], batch: list[Sequence]) -> bool:
        """One chunk of prompts, the oldest first: every row with nothing decoding, else at
        most PREFILL_CHUNK; prompts that arrived together go through each linear together.
        Where every prompt of the chunk goes through the C step (decoder.prompt_in_c), the
        replies decoding take their step in the same pass: its weights are read once for
        both. A prompt whose last rows are in gets its first token, leaves its place, and
        decodes from the next step (its `position` is set). True: the batch took its step."""
        # At the oldest prompt's place; the kept caches' copies (_start) too: they compete with the prompts for the memory.
        with self.cores.prefilling(waiting[0].place, keep=True):
            parts, taken, rows = [], [], 0
            limit = PREFILL_CHUNK if batch else sum(len(s.prompt) for s in waiting)
            for s in waiting:
                if rows >= limit:
                    break
                if s.cache is None and not self._guarded(s, self._start):
                    continue
                end = min(len(s.prompt), s.filled + limit - rows)
                parts.append((s.ids[:, s.filled:end], s.filled, s.cache))
                taken.append((s, end))
                rows += end - s.filled
            if not parts:
                return False
            # A prompt's path is chosen by its whole length, never by how it was cut in chunks or batched.
            lengths = [len(s.prompt) - s.reused for s, _ in taken]
            riding = batch if all(self.decoder.prompt_in_c(n) for n in lengths) else []
            parts += [(s.ids[:, s.position:s.position + 1], s.position, s.cache) for s in riding]
            try:
                logits = self.decoder.prefill(parts, lengths + [1] * len(riding))
            except BaseException as exc:  # noqa: BLE001 -- each reply of the chunk reports it
                self._fail([s for s, _ in taken] + riding, exc)
                return bool(riding)
        for (s, end), last in zip(taken, logits[:len(taken)], strict=True):
            s.filled = end
            if end == len(s.prompt):
                self.cores.leave(s.place)
                s.position = end
                self._guarded(s, lambda s, last=last: self._choose(s, last))
        self._stepped(riding, logits[len(taken):])
        return bool(riding)

    def _start(self, s: Sequence) -> bool:
        """A reply's prompt to the streamer, and its cache (the conversation's kept one where
        it shares a start); False when it was stopped before its turn came."""
        if s.stop.is_set():
            self._finish(s)
            return False
        s.streamer.put(s.ids[:, :len(s.prompt)])
        s.cache, s.reused = self.decoder.cache_for(s.prompt, len(s.prompt) + s.max_new_tokens, s.conversation)
        s.filled = s.reused
        return True

    def _step(self, batch: list[Sequence]) -> None:
        try:
            logits = self.decoder.forward_batch([int(s.ids[0, s.position]) for s in batch], [s.position for s in batch],
                                                [s.cache for s in batch])
        except BaseException as exc:  # noqa: BLE001 -- each reply of the step reports it
            self._fail(batch, exc)
            return
        self._stepped(batch, list(logits.split(1)))

    def _stepped(self, batch: list[Sequence], logits: list[torch.Tensor]) -> None:
        """Each reply's next token from its row of a step's logits."""
        for s, row in zip(batch, logits, strict=True):
            s.position += 1
            self._guarded(s, lambda s, row=row: self._choose(s, row))

    def _choose(self, s: Sequence, logits: torch.Tensor) -> bool:
        """The token at s.position from the logits before it; True when the reply ended."""
        token = s.processors(s.ids[:, :s.position], logits).argmax(dim=-1)
        s.ids[0, s.position] = token
        s.streamer.put(token)
        if int(token) in s.eos or s.stop.is_set() or s.position + 1 == len(s.prompt) + s.max_new_tokens:
            self._finish(s)
            return True
        return False

    def _finish(self, s: Sequence) -> None:
        self.cores.leave(s.place)  # stopped before its prompt was all in
        if s.cache is not None:  # the last token is not in the cache yet
            self.kept.keep(s.conversation, s.ids[0, :s.position].tolist(), list(s.cache))
        try:
            s.streamer.end()
        finally:
            s.finished.set()

    def _fail(self, sequences: list[Sequence], exc: BaseException) -> None:
        logging.getLogger(__name__).debug("a reply failed in the decode loop", exc_info=exc)
        for s in sequences:
            self.cores.leave(s.place)
            s.error = exc
            s.finished.set()
