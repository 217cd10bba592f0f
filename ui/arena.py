"""A side-by-side chat session: panes (merged model and parents), each with its own
history, sent the same message with the same settings. Plain data and generator
functions, so the app's handlers stay one-liners and tests need no browser."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

from core.errors import UserError
from inference.generation import GenerationSettings, Reply, stream_side_by_side
from inference.loading import LoadedModel, ModelCache
from ui.votes import PANE_LABELS, VoteStore


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
    blind: bool = False  # panes shuffled and shown as "Model 1/2/3" until the vote
    revealed: bool = True
    votes: list[dict] = field(default_factory=list)  # this session's votes, for the export

    def pane(self, label: str) -> Pane:
        return next(p for p in self.panes if p.label == label)

    def configure(self, refs: dict[str, str], precisions: dict[str, str], enabled: dict[str, bool]) -> None:
        """Point the panes (by label) at models; a pane whose model changed starts afresh."""
        for pane in self.panes:
            ref, precision = refs[pane.label], precisions[pane.label]
            if (pane.ref, pane.precision) != (ref, precision):
                pane.history, pane.status = [], ""
            pane.ref, pane.precision, pane.enabled = ref, precision, enabled[pane.label]

    def set_blind(self, blind: bool, rng: random.Random | None = None) -> None:
        """Blind mode starts a fresh, shuffled round; leaving it shows the fixed order."""
        clear(self)
        self.blind, self.revealed = blind, not blind
        if blind:
            (rng or random.Random()).shuffle(self.panes)
        else:
            self.panes.sort(key=lambda p: PANE_LABELS.index(p.label))

    def display_labels(self) -> list[str]:
        if self.blind and not self.revealed:
            return [f"Model {i + 1}" for i in range(len(self.panes))]
        if self.blind:
            return [f"Model {i + 1} = {p.label}" for i, p in enumerate(self.panes)]
        return [p.label for p in self.panes]

    def last_prompt(self) -> str:
        users = [m["content"] for p in self.panes for m in p.history if m["role"] == "user"]
        return users[-1] if users else ""

    def replies_in(self) -> bool:
        active = [p for p in self.panes if p.active and p.history]
        return bool(active) and all(p.history[-1]["role"] == "assistant" and p.history[-1]["content"] for p in active)


def send(session: ArenaSession, cache: ModelCache, message: str, settings: GenerationSettings, system_prompt: str = "",
         stop: threading.Event | None = None) -> Iterator[ArenaSession]:
    if not message.strip():
        raise UserError("message", "empty message", "type a message before sending")
    panes = [p for p in session.panes if p.active]
    if not panes:
        raise UserError("panes", "no model is switched on", "tick at least one pane and give it a model")
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
        raise UserError("regenerate", "there is no message to answer again", "send a message first")
    yield from _reply(session, panes, cache, settings, system_prompt, stop)


def clear(session: ArenaSession) -> ArenaSession:
    for pane in session.panes:
        pane.history, pane.status = [], ""
    if session.blind:
        session.revealed = False
    return session


def vote(session: ArenaSession, store: VoteStore, best: str, worst: str, settings: GenerationSettings, config_hash: str) -> None:
    """Record a verdict on the last replies. `best` / `worst` are display names
    ("Model 2") or "tie" / "" (no verdict); the real names are revealed afterwards."""
    if not session.replies_in():
        raise UserError("vote", "there are no replies to judge yet", "send a message and wait for the replies")
    shown = dict(zip([f"Model {i + 1}" for i in range(len(session.panes))], session.panes, strict=True))
    verdicts: list[tuple[str, str | None]] = []
    for verdict, choice in (("best", best), ("worst", worst)):
        if choice == "tie":
            verdicts.append(("tie", None))
        elif choice:
            if choice not in shown:
                raise UserError(verdict, f"'{choice}' is not one of the panes", "pick Model 1, 2 or 3, or tie")
            verdicts.append((verdict, shown[choice].label))
    verdicts = list(dict.fromkeys(verdicts))
    if not verdicts:
        raise UserError("vote", "nothing chosen", "pick the best (or worst) reply, or tie")
    if best and best == worst and best != "tie":
        raise UserError("vote", "the same reply is both best and worst", "pick two different replies")
    active = [p for p in session.panes if p.active and p.history]
    models = {p.label: p.ref for p in active}
    replies = {p.label: p.history[-1]["content"] for p in active}
    store.record(config_hash, session.last_prompt(), verdicts, models, replies, asdict(settings))
    session.votes.append({"prompt": session.last_prompt(), "verdicts": verdicts, "models": models})
    session.revealed = True


def export_json(session: ArenaSession, settings: GenerationSettings) -> str:
    return json.dumps({
        "settings": asdict(settings),
        "panes": [{"label": p.label, "model": p.ref, "precision": p.precision, "history": p.history} for p in session.panes],
        "votes": session.votes,
    }, indent=2)


def export_markdown(session: ArenaSession, settings: GenerationSettings) -> str:
    lines = ["# Slerp Arena comparison", "",
             "| pane | model | precision |", "|---|---|---|",
             *[f"| {p.label} | `{p.ref}` | {p.precision} |" for p in session.panes if p.ref], "",
             f"Settings: {', '.join(f'{k}={v}' for k, v in asdict(settings).items())}", ""]
    turns = max((len(p.history) for p in session.panes), default=0)
    for i in range(0, turns, 2):
        prompt = next((p.history[i]["content"] for p in session.panes if len(p.history) > i), "")
        lines += ["## User", "", prompt, ""]
        for p in session.panes:
            if len(p.history) > i + 1:
                lines += [f"### {p.label}", "", p.history[i + 1]["content"], ""]
    for v in session.votes:
        lines.append(f"Vote on “{v['prompt']}”: " + ", ".join(f"{verdict} = {label or '—'}" for verdict, label in v["verdicts"]))
    return "\n".join(lines) + "\n"


def _reply(session: ArenaSession, panes: list[Pane], cache: ModelCache, settings: GenerationSettings, system_prompt: str,
           stop: threading.Event | None) -> Iterator[ArenaSession]:
    loaded: list[tuple[Pane, LoadedModel]] = []
    for pane in panes:
        pane.status = f"loading {pane.ref} ({pane.precision})…"
        yield session
        try:
            loaded.append((pane, cache.get(pane.ref, pane.precision)))
            pane.status = ""
        except UserError as exc:  # shown in this pane; the others still answer
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
