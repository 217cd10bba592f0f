"""A side-by-side chat session: panes (merged model and parents), each with its own
history, sent the same message with the same settings. Plain data and generator
functions, so the app's handlers stay one-liners and tests need no browser."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from inference.errors import InferenceError
from inference.generation import GenerationSettings, Reply, stream_side_by_side
from inference.loading import LoadedModel, ModelCache

PANE_LABELS = ("Merged", "Parent A", "Parent B")


@dataclass
class Pane:
    label: str
    ref: str = ""
    precision: str = "auto"
    enabled: bool = True
    history: list[dict[str, str]] = field(default_factory=list)
    status: str = ""  # stats of the last reply, a loading notice, or an error

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.ref.strip())


@dataclass
class ArenaSession:
    panes: list[Pane] = field(default_factory=lambda: [Pane(label) for label in PANE_LABELS])

    def configure(self, refs: list[str], precisions: list[str], enabled: list[bool]) -> None:
        """Point the panes at models; a pane whose model changed starts a fresh history."""
        for pane, ref, precision, on in zip(self.panes, refs, precisions, enabled, strict=True):
            if (pane.ref, pane.precision) != (ref, precision):
                pane.history, pane.status = [], ""
            pane.ref, pane.precision, pane.enabled = ref, precision, on


def send(session: ArenaSession, cache: ModelCache, message: str, settings: GenerationSettings, system_prompt: str = "",
         stop: threading.Event | None = None) -> Iterator[ArenaSession]:
    if not message.strip():
        raise InferenceError("message", "empty message", "type a message before sending")
    panes = [p for p in session.panes if p.active]
    if not panes:
        raise InferenceError("panes", "no model is switched on", "tick at least one pane and give it a model")
    for pane in panes:
        pane.history.append({"role": "user", "content": message})
    yield from _reply(session, panes, cache, settings, system_prompt, stop)


def regenerate(session: ArenaSession, cache: ModelCache, settings: GenerationSettings, system_prompt: str = "",
               stop: threading.Event | None = None) -> Iterator[ArenaSession]:
    """Answer the last user message again (in every active pane that has one)."""
    panes = []
    for pane in session.panes:
        if pane.active and pane.history:
            if pane.history[-1]["role"] == "assistant":
                pane.history.pop()
            panes.append(pane)
    if not panes:
        raise InferenceError("regenerate", "there is no message to answer again", "send a message first")
    yield from _reply(session, panes, cache, settings, system_prompt, stop)


def clear(session: ArenaSession) -> ArenaSession:
    for pane in session.panes:
        pane.history, pane.status = [], ""
    return session


def _reply(session: ArenaSession, panes: list[Pane], cache: ModelCache, settings: GenerationSettings, system_prompt: str,
           stop: threading.Event | None) -> Iterator[ArenaSession]:
    loaded: list[tuple[Pane, LoadedModel]] = []
    for pane in panes:
        pane.status = f"loading {pane.ref} ({pane.precision})…"
        yield session
        try:
            loaded.append((pane, cache.get(pane.ref, pane.precision)))
            pane.status = ""
        except InferenceError as exc:  # shown in this pane; the others still answer
            pane.status = f"⚠️ {exc}"
            pane.history.pop()
    if not loaded:
        yield session
        return
    for pane, _ in loaded:
        pane.history.append({"role": "assistant", "content": ""})
    histories = [pane.history[:-1] for pane, _ in loaded]
    for replies in stream_side_by_side([m for _, m in loaded], histories, settings, stop, system_prompt):
        for (pane, model), reply in zip(loaded, replies, strict=True):
            pane.history[-1]["content"] = reply.text if not reply.error else f"⚠️ {reply.error}"
            pane.status = format_status(reply, model)
        yield session


def format_status(reply: Reply, model: LoadedModel) -> str:
    r, s = model.report, reply.stats
    parts = [f"{s.new_tokens} tokens"]
    if s.first_token_s is not None:
        parts.append(f"first token {s.first_token_s:.2f} s")
    if s.tokens_per_s:
        parts.append(f"{s.tokens_per_s:.1f} tok/s")
    parts.append(f"{r.precision} ({r.backend})")
    parts.append(f"{r.weight_bytes / 1e6:.0f} MB")
    if reply.stopped:
        parts.append("stopped")
    if reply.notice:
        parts.append(reply.notice)
    return " · ".join(parts)
