"""How the replies decoding at once in this process share its cores.

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
import os
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import torch

_decoding = 0  # replies decoding now, in this process
_lock = threading.Lock()
_prompts_changed = threading.Condition(_lock)
_prompts: deque[Place] = deque()  # one ticket per prompt waiting or being prefilled, in arrival order
_here = threading.local()  # .prefilling: this thread holds the head ticket


@contextlib.contextmanager
def sharing_cores() -> Iterator[None]:
    """Count a reply as decoding while inside: concurrent replies split the cores (below)."""
    global _decoding
    with _lock:
        _decoding += 1
    try:
        yield
    finally:
        with _lock:
            _decoding -= 1


def kernel_threads() -> int:
    """Cores per kernel call: every one of torch's threads for a prompt (it runs alone) or
    a single reply, a share of them when several decode at once. Three panes each asking
    for both cores put 6 OpenMP threads on 2 cores, spinning at every barrier."""
    if getattr(_here, "prefilling", False):
        return torch.get_num_threads()
    return max(1, torch.get_num_threads() // max(1, _decoding))


@dataclass(eq=False)
class Place:
    """A prompt's place in the queue, and whose prompt it is (a model's scheduler)."""
    owner: object = None


def queue_prompts(count: int, owner: object = None) -> list[Place]:
    """Places in the queue for `count` prompts, in this order: panes started together
    prefill in pane order, not in the order their threads happen to get there (which
    moved each pane's first token from run to run)."""
    places = [Place(owner) for _ in range(count)]
    with _lock:
        _prompts.extend(places)
    return places


def leave(place: Place | None) -> None:
    """Give a place up: its prompt is done, or will not be prefilled here (the reply
    failed before it, or it runs through generate's own loop)."""
    with _lock:
        if place in _prompts:
            _prompts.remove(place)
            _prompts_changed.notify_all()


@contextlib.contextmanager
def prefilling(place: Place | None = None, keep: bool = False) -> Iterator[None]:
    """Prefill a prompt (or a chunk of it) inside, at `place` (from queue_prompts) or last
    in the queue: waits for the prompts before it. `keep`: the place stays at the head
    afterwards, for the prompt's next chunk (`leave` gives it up)."""
    if place is None:
        (place,) = queue_prompts(1)
    with _lock:
        while _prompts and _prompts[0] is not place:
            _prompts_changed.wait()
    _here.prefilling = True
    try:
        yield
    finally:
        _here.prefilling = False
        if not keep:
            leave(place)


def before_a_token(owner: object = None) -> None:
    """Called before each decode step: waits while a prompt is waiting or prefilling,
    unless the one at the head is `owner`'s (the stepping model's own, between two of its
    chunks, or about to be taken in)."""
    if not _prompts:  # the common case, without the lock: a stale read only delays the wait by a token
        return
    with _lock:
        while _prompts and (owner is None or _prompts[0].owner is not owner):
            _prompts_changed.wait()


def _forget_in_a_forked_child() -> None:
    """A forked child (a ZeroGPU worker) starts with no replies and no prompts: the
    threads that held them stayed in the parent, and a prompt counted here would make
    every token in the child wait for ever."""
    global _decoding, _lock, _prompts_changed
    _decoding = 0
    _lock = threading.Lock()
    _prompts_changed = threading.Condition(_lock)
    _prompts.clear()


os.register_at_fork(after_in_child=_forget_in_a_forked_child)
