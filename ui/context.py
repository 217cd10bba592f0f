"""What both tabs share: where the app keeps its files, the one model cache, the
public-mode policy, and how a user error reaches the page."""

from __future__ import annotations

import functools
import inspect
import os
import threading
from pathlib import Path

import gradio as gr

from core.errors import UserError
from core.policy import AccessPolicy, policy_from_env
from core.sources import BUNDLED_PREFIX, DEFAULT_MODEL
from inference import ModelCache

ROOT = Path(__file__).resolve().parent.parent
PRIVATE = "private"  # api_visibility of events that are UI plumbing, not part of the API
ON_SPACE = bool(os.environ.get("SPACE_ID"))
# Offline: the bundled SmolLM2 with itself. On a Space: the Qwen2.5 seed pair, Instruct as base, V-curve.
DEFAULT_A, DEFAULT_B = ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B") if ON_SPACE else (DEFAULT_MODEL, DEFAULT_MODEL)

MODELS = ModelCache()  # shared by all visitors: each (model, precision) is loaded once


class CancelSession:
    """Per visitor (gr.State): the event their Cancel sets for one kind of long job (a
    merge, a t-sweep, the demo parent's build). A plain class, not a dataclass: Gradio
    serializes dataclass states, and Events don't."""

    def __init__(self) -> None:
        self.cancel = threading.Event()

    def __deepcopy__(self, memo: dict) -> CancelSession:  # gr.State copies its default per session
        return CancelSession()


def cancel(session: CancelSession) -> None:
    """A Cancel button: ask the running job to stop; its own handler then shows the cancelled state."""
    session.cancel.set()


def short_name(ref: str) -> str:
    """A model reference as a label: the folder's or the bundled model's name."""
    return Path(ref.removeprefix(BUNDLED_PREFIX).rstrip("/")).name or ref


def outputs_root() -> Path:
    return Path(os.environ.get("SLERP_ARENA_OUTPUTS", ROOT / "outputs"))


def votes_path() -> Path:
    return Path(os.environ.get("SLERP_ARENA_VOTES", ROOT / "data" / "votes.sqlite"))


def models_root() -> Path:
    return Path(os.environ.get("SLERP_ARENA_MODELS", ROOT / "models"))


def access_policy() -> AccessPolicy | None:
    """Public mode (on a Space, or SLERP_ARENA_PUBLIC=1): local paths only under the roots."""
    return policy_from_env((models_root(),), outputs_root())


def check_models(*refs: str) -> None:
    """Raise the policy's UserError for the first reference a visitor may not use."""
    if (policy := access_policy()) is not None:
        for ref in refs:
            policy.check_model(ref)


def shown_as_toast(handler):
    """A handler whose UserError becomes a Gradio error toast (one line: field, problem,
    fix) instead of a traceback. Works for plain and generator handlers."""
    if inspect.isgeneratorfunction(handler):
        @functools.wraps(handler)
        def stream(*args, **kwargs):
            try:
                yield from handler(*args, **kwargs)
            except UserError as exc:
                raise gr.Error(str(exc)) from None
        return stream

    @functools.wraps(handler)
    def call(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except UserError as exc:
            raise gr.Error(str(exc)) from None
    return call
