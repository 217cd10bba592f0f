"""How the replies decoding at once share the cores of a process: `Cores`, one per model
cache (inference/cache.py), so one for the app's models.

Prompts first, one at a time: a reply's prompt is prefilled when the prompts that came
before it are done, with every core, and no reply decodes a token while a prompt is
waiting or being prefilled. Then the replies decode side by side, each on a share of
the cores. Why: three panes prefilling at once on 2 cores ran three OpenMP teams of two
threads there, and a pane's first token moved by +-0.3 s from one run to the next
(benchmarks/turns.py). One at a time, each first token comes after the prompts queued
before it, at the prompts' arithmetic, and a token's decode step is short enough to
wait for a prompt.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import torch

# Which Cores the running code decodes on, and whether it is prefilling (it then holds the
# head of the prompt queue): what the kernels read for their thread count (kernel_threads).
_running_on: contextvars.ContextVar[tuple[Cores, bool] | None] = contextvars.ContextVar("cores", default=None)


@dataclass(eq=False)
class Place:
    """A prompt's place in the queue, and whose prompt it is (a model's scheduler)."""
    owner: object = None


class Cores:
    """The replies decoding now and the prompts waiting, of the models that share a process's cores."""

    def __init__(self) -> None:
        self._start_afresh()

    def _start_afresh(self) -> None:
        """No replies and no prompts: at the start, and in a forked child (a ZeroGPU
        worker), where the threads that held them stayed in the parent, and a prompt
        counted here would make every token in the child wait for ever."""
        self._pid = os.getpid()
        self._decoding = 0
        self._lock = threading.Lock()
        self._prompts_changed = threading.Condition(self._lock)
        self._prompts: deque[Place] = deque()  # one ticket per prompt waiting or being prefilled, in arrival order

    def _here(self) -> Cores:
        if self._pid != os.getpid():
            self._start_afresh()
        return self

    @contextlib.contextmanager
    def decoding(self) -> Iterator[None]:
        """Count a reply as decoding while inside: concurrent replies split the cores (threads)."""
        with self._here()._lock:
            self._decoding += 1
        token = _running_on.set((self, False))
        try:
            yield
        finally:
            _running_on.reset(token)
            with self._here()._lock:
                self._decoding = max(0, self._decoding - 1)

    def threads(self, prefilling: bool) -> int:
        """Cores per kernel call: every one of torch's threads for a prompt (it runs alone)
        or a single reply, a share of them when several decode at once. Three panes each
        asking for both cores put 6 OpenMP threads on 2 cores, spinning at every barrier."""
        if prefilling:
            return torch.get_num_threads()
        return max(1, torch.get_num_threads() // max(1, self._decoding))

    def queue_prompts(self, count: int, owner: object = None) -> list[Place]:
        """Places in the queue for `count` prompts, in this order: panes started together
        prefill in pane order, not in the order their threads happen to get there (which
        moved each pane's first token from run to run)."""
        places = [Place(owner) for _ in range(count)]
        with self._here()._lock:
            self._prompts.extend(places)
        return places

    def waiting(self) -> int:
        """Prompts waiting or being prefilled."""
        return len(self._here()._prompts)

    def leave(self, place: Place | None) -> None:
        """Give a place up: its prompt is done, or will not be prefilled here (the reply
        failed before it, or it runs through generate's own loop)."""
        with self._here()._lock:
            if place in self._prompts:
                self._prompts.remove(place)
                self._prompts_changed.notify_all()

    @contextlib.contextmanager
    def prefilling(self, place: Place | None = None, keep: bool = False) -> Iterator[None]:
        """Prefill a prompt (or a chunk of it) inside, at `place` (from queue_prompts) or
        last in the queue: waits for the prompts before it. `keep`: the place stays at the
        head afterwards, for the prompt's next chunk (`leave` gives it up)."""
        if place is None:
            (place,) = self.queue_prompts(1)
        with self._here()._lock:
            while self._prompts and self._prompts[0] is not place:
                self._prompts_changed.wait()
        token = _running_on.set((self, True))
        try:
            yield
        finally:
            _running_on.reset(token)
            if not keep:
                self.leave(place)

    def before_a_token(self, owner: object = None) -> None:
        """Called before each decode step: waits while a prompt is waiting or prefilling,
        unless the one at the head is `owner`'s (the stepping model's own, between two of
        its chunks, or about to be taken in)."""
        if not self._here()._prompts:  # the common case, without the lock: a stale read only delays the wait by a token
            return
        with self._lock:
            while self._prompts and (owner is None or self._prompts[0].owner is not owner):
                self._prompts_changed.wait()


def kernel_threads() -> int:
    """Threads for the kernel call about to run: its Cores' share (Cores.threads), or all
    of torch's outside any (a benchmark, a test calling a kernel directly)."""
    running = _running_on.get()
    return torch.get_num_threads() if running is None else running[0].threads(prefilling=running[1])
