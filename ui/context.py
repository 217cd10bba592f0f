"""What both tabs share: the one model cache, the public-mode checks, per-visitor Cancel,
and how a user error reaches the page."""

from __future__ import annotations

import functools
import inspect
import threading
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from core.errors import UserError
from core.places import models_root, outputs_root
from core.sources import BUNDLED_PREFIX

PRIVATE = "private"  # api_visibility of events that are UI plumbing, not part of the API


def chat_queue() -> dict:
    """Where a chat's stream steps queue. On ZeroGPU each is a GPU call of its own, in its
    own forked worker, one at a time as the device's other jobs. Elsewhere up to
    MAX_BATCH visitors stream at once, so that their replies share the decode steps of
    each model (inference/scheduler.py)."""
    from core.zerogpu import on_zerogpu
    from inference.scheduler import MAX_BATCH

    return {"concurrency_id": "device", "concurrency_limit": 1} if on_zerogpu() else {
        "concurrency_id": "chat", "concurrency_limit": MAX_BATCH}


class CancelSession:
    """Per visitor (gr.State): the event their Cancel sets for one kind of long job (a
    merge, a t-sweep). A plain class, not a dataclass: Gradio serializes dataclass
    states, and Events don't."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.visitor = Visitor()

    def __deepcopy__(self, memo: dict) -> CancelSession:  # gr.State copies its default per session
        return CancelSession()


@dataclass(frozen=True)
class Visitor:
    """Who is signed in with Hugging Face (on a Space with hf_oauth): their token downloads
    gated and private models and pushes merges to their namespace. None: not signed in."""
    token: str | None = field(default=None, repr=False)
    username: str | None = None


def cancel(session: CancelSession) -> None:
    """A Cancel button: ask the running job to stop; its own handler then shows the cancelled state."""
    session.cancel.set()


def short_name(ref: str) -> str:
    """A model reference as a label: the folder's or the bundled model's name."""
    return Path(ref.removeprefix(BUNDLED_PREFIX).rstrip("/")).name or ref


def in_visitor_words(text: str) -> str:
    """A message with the server's folders named as the visitor knows them (outputs/, models/)."""
    for root in (outputs_root(), models_root()):
        for spelled in {str(root.expanduser().resolve()), str(root)}:
            text = text.replace(spelled, root.name)
    return text


def shown_as_toast(handler):
    """A handler whose UserError becomes a Gradio error toast (one line: field, problem,
    fix) instead of a traceback. Works for plain and generator handlers."""
    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def stream(*args, **kwargs):
            try:
                yield from handler(*args, **kwargs)
            except UserError as exc:
                raise gr.Error(in_visitor_words(str(exc))) from None
        return stream

    @functools.wraps(handler)
    def call(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except UserError as exc:
            raise gr.Error(in_visitor_words(str(exc))) from None
    return call
