"""A side-by-side chat session: panes (merged model and parents), each with its own
history, sent the same message with the same settings; blind rounds (shuffled, anonymous
until the vote), votes, and export. Plain data and generator functions, so the app's
handlers stay one-liners and tests need no browser.

The session lives in the main process. A reply loads the panes' models here, then streams
through the GPU boundary (inference/replies.py), which sees only plain data: the conversation
so far and the settings. Each reply belongs to a Round, the session's current one while
it streams; a Stop, a Clear or a newer round replaces it, and from then on the older
round's stream changes nothing (`round is session.current`)."""

from __future__ import annotations

import contextlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

from arena.leaks import identity_leak
from arena.pace import FRAME_S, SharedPace
from arena.prompt_fit import check_fits, record_prefills
from arena.votes import PANE_LABELS, VoteStore, verdicts
from core.downloads import Progress, watching
from core.errors import UserError
from core.hub_access import as_visitor
from core.sources import check_hub_access
from inference import cache
from inference.endpoint import EndpointModel
from inference.generation import ChatModel, GenerationSettings, Reply
from inference.loading import LoadedModel
from inference.replies import PaneRequest, RepliesRequest, stream_replies
from merging.config import parse_config

STOPPED_UNSAID = "*stopped before its first word*"  # shown for a reply the Stop left empty
HIDDEN_ERROR = "⚠️ this pane's model failed (the reason is shown after the reveal)"  # the reason may name the model or its host


class Phase(Enum):
    QUEUED = "queued"  # taken, waiting for this visitor's replies before it
    STREAMING = "streaming"
    STOPPED = "stopped"  # a Stop, a Clear or blind mode ended it (or it never began)
    DONE = "done"


@dataclass(eq=False)
class Round:
    """One message answered in every pane that is on (a Regenerate: the last one again),
    from Send to its last token. Compared by identity: the session's current round is the
    only one whose stream may change the panes."""
    message: str = ""  # '' for Regenerate
    seed: int | None = None  # what it samples with (None: the page's seed box)
    remark: str = ""  # said while it streams: a long prefill's wait, what weakens this blind round
    phase: Phase = Phase.QUEUED
    taken: list = field(default_factory=list)  # a Regenerate's replies taken back: put back if it is stopped before any began
    merged_coming: Future | None = None  # sent while the first chat's default merge ran: the Merged pane answers with it


class PaneState(Enum):
    IDLE = "idle"  # its last turn's stats show (or a hint, `notice`)
    LOADING = "loading"  # `notice` says what and how far
    READING = "reading"  # loaded, its model reading the prompt: no words yet
    FAILED = "failed"  # `notice` says why (hidden until the reveal: it may name the model)


@dataclass
class Turn:
    """What one pane did for one reply: the settings used, and how it went."""
    prompt: str
    settings: dict  # GenerationSettings as a dict (seed included)
    system_prompt: str = ""
    stopped: bool = False
    error: str = ""
    notice: str = ""
    tokens: int = 0
    first_token_s: float | None = None
    cached_tokens: int = 0  # of the prompt, reused from the pane's last turn
    tokens_per_s: float = 0.0
    precision: str = ""
    backend: str = ""
    weight_mb: float = 0.0
    served_by: str = ""  # HOST:PORT of an endpoint; '' for a model loaded here
    done: bool = False

    def line(self, reveal: bool) -> str:
        """The pane's one-line stats. Before the reveal only whether it was stopped: a
        token count would tell a verbose model, a speed the merge."""
        if not reveal:
            return "stopped" if self.stopped else ""
        parts = [f"{self.tokens} tokens", f"seed {self.settings.get('seed', 0)}"]
        if self.first_token_s is not None:
            parts.append(f"first token {self.first_token_s:.2f} s")
        if self.cached_tokens:
            parts.append(f"{self.cached_tokens} prompt tokens reused")
        if self.tokens_per_s:
            parts.append(f"{self.tokens_per_s:.1f} tok/s")
        if self.served_by:
            parts.append(f"served by {self.served_by}")
        else:
            parts += [self.precision, f"{self.weight_mb:.0f} MB" if self.weight_mb >= 10 else f"{self.weight_mb:.1f} MB"]
        if self.stopped:
            parts.append("stopped")
        if self.notice:
            parts.append(self.notice)
        return " · ".join(parts)


@dataclass
class Pane:
    label: str
    ref: str = ""
    precision: str = "auto"
    enabled: bool = True
    history: list[dict[str, str]] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)  # one per assistant message
    state: PaneState = PaneState.IDLE
    notice: str = ""  # what the state says: a load's progress, an error, a hint

    @property
    def active(self) -> bool:
        return self.enabled and bool(self.ref.strip())

    def set(self, state: PaneState, notice: str = "") -> None:
        self.state, self.notice = state, notice

    def shown(self) -> list[dict[str, str]]:
        """The history as the page shows it: a reply stopped before its first word says
        so, where an empty one was a bare grey bubble. The model's history keeps it empty."""
        turns, shown = iter(self.turns), []
        for message in self.history:
            turn = next(turns, None) if message["role"] == "assistant" else None
            unsaid = turn is not None and turn.stopped and not message["content"]
            shown.append({**message, "content": STOPPED_UNSAID} if unsaid else message)
        return shown

    def status(self, reveal: bool) -> str:
        if self.state is PaneState.READING:
            return "reading your message…"
        if self.state is PaneState.LOADING:
            return self.notice if reveal else "loading…"
        if self.state is PaneState.FAILED:
            return f"⚠️ {self.notice}" if reveal else HIDDEN_ERROR
        if self.notice:
            return self.notice if reveal else ""
        return self.turns[-1].line(reveal) if self.turns else ""


@dataclass
class ArenaSession:
    panes: list[Pane] = field(default_factory=lambda: [Pane(label) for label in PANE_LABELS])
    blind: bool = False  # panes shuffled and shown as "Model 1/2/3" until the vote
    revealed: bool = True
    rounds: int = 0  # rounds started (a first message after Clear, blind mode, or a fresh session)
    votes: list[dict] = field(default_factory=list)  # this session's votes, for the export
    rng: random.Random = field(default_factory=random.Random)
    current: Round | None = None  # the round streaming now; a Stop or Clear ends it
    name: str = field(default_factory=lambda: uuid.uuid4().hex)  # names its panes' conversations for KV reuse (inference/replies.py)
    token: str | None = field(default=None, repr=False)  # the signed-in visitor's Hub token (core/hub_access.py)
    unsent: list[str] = field(default_factory=list)  # messages no pane took (no model loaded, or refused): back to the box

    def pane(self, label: str) -> Pane:
        return next(p for p in self.panes if p.label == label)

    def configure(self, refs: dict[str, str], precisions: dict[str, str], enabled: dict[str, bool]) -> None:
        """Point the panes (by label) at models; a pane whose model changed starts afresh."""
        for pane in self.panes:
            ref, precision = refs[pane.label], precisions[pane.label]
            if (pane.ref, pane.precision) != (ref, precision):
                pane.history, pane.turns = [], []
                pane.set(PaneState.IDLE)
            pane.ref, pane.precision, pane.enabled = ref, precision, enabled[pane.label]

    def set_blind(self, blind: bool) -> None:
        """Blind mode starts a fresh, shuffled round; leaving it shows the fixed order."""
        clear(self)
        self.blind = blind
        self.start_round()
        if not blind:
            self.panes.sort(key=lambda p: PANE_LABELS.index(p.label))

    def start_round(self) -> None:
        """A new round: in blind mode a new mapping of panes to Model 1/2/3, hidden again."""
        self.rounds += 1
        self.revealed = not self.blind
        if self.blind:
            self.rng.shuffle(self.panes)

    def is_fresh(self) -> bool:
        return not any(p.history for p in self.panes)

    def display_labels(self) -> list[str]:
        if self.blind and not self.revealed:
            return [f"Model {i + 1}" for i in range(len(self.panes))]
        if self.blind:
            return [f"Model {i + 1} = {p.label}" for i, p in enumerate(self.panes)]
        return [p.label for p in self.panes]

    def statuses(self) -> list[str]:
        return [p.status(self.revealed) for p in self.panes]

    def last_prompt(self) -> str:
        users = [m["content"] for p in self.panes for m in p.history if m["role"] == "user"]
        return users[-1] if users else ""

    def replies_in(self) -> bool:
        active = [p for p in self.panes if p.active and p.history]
        return bool(active) and all(p.history[-1]["role"] == "assistant" and p.turns and p.turns[-1].done for p in active)

    def failed(self) -> bool:
        """A pane of this round failed (to load, or to reply): the round cannot be judged."""
        return any(p.state is PaneState.FAILED or (p.history and p.turns and p.turns[-1].error) for p in self.panes if p.active)

    def waiting(self) -> list[Pane]:
        """The active panes whose conversation ends with a user turn to answer."""
        return [p for p in self.panes if p.active and p.history and p.history[-1]["role"] == "user"]


def add_message(session: ArenaSession, message: str) -> None:
    """The message joins every active pane's conversation; the first message of a round
    starts it (a new blind mapping). `reply` answers it."""
    if not message.strip():
        raise UserError("message", "empty message", "type a message before sending")
    panes = [p for p in session.panes if p.active]
    if not panes:
        raise UserError("panes", "no model is switched on", "open Models, tick at least one pane and give it a model")
    if session.is_fresh():
        session.start_round()
    for pane in panes:
        pane.history.append({"role": "user", "content": message})


def take_back_replies(session: ArenaSession) -> list[tuple[Pane, dict, Turn]]:
    """Regenerate's first half: the last replies go, so `reply` answers the last message
    again. Returns them, for `put_back_replies` if the new ones cannot be made."""
    panes = [p for p in session.panes if p.active and p.history]
    if not panes:
        raise UserError("regenerate", "there is no message to answer again", "send a message first")
    taken = []
    for pane in panes:
        if pane.history[-1]["role"] == "assistant":
            taken.append((pane, pane.history.pop(), pane.turns.pop()))
    return taken


def put_back_replies(taken: list[tuple[Pane, dict, Turn]]) -> None:
    for pane, message, turn in taken:
        pane.history.append(message)
        pane.turns.append(turn)


def take_back_message(session: ArenaSession, message: str) -> None:
    """The inverse of add_message, for a message refused before any reply began."""
    for pane in session.panes:
        if pane.history and pane.history[-1] == {"role": "user", "content": message}:
            pane.history.pop()


def end_round(session: ArenaSession) -> None:
    """The current round ends, stopped: from now on its stream changes nothing."""
    if session.current is not None:
        session.current.phase = Phase.STOPPED
        session.current = None


def stop(session: ArenaSession) -> str:
    """The running replies end where they are, marked stopped (the page cancels the stream).
    A round stopped before any pane began its reply (its models still loading) leaves no
    unanswered message in the panes, which the next turn's chat template may refuse (roles
    must alternate): its message comes back out (a Regenerate's replies go back in) and is
    returned, for the box ('' when there is none)."""
    round = session.current
    began = round is not None and round.phase is Phase.STREAMING  # its message is in the panes
    end_round(session)
    unbegun = session.waiting() if began else []
    if unbegun:
        if round.message:
            for pane in unbegun:
                pane.history.pop()
        put_back_replies(round.taken)
        round.taken = []  # back once
    for pane in session.panes:
        if pane.state in (PaneState.LOADING, PaneState.READING):  # not left saying so once nothing runs
            pane.set(PaneState.IDLE)
        for turn in pane.turns:
            if not turn.done:
                turn.stopped = turn.done = True
    return round.message if unbegun else ""


def clear(session: ArenaSession) -> ArenaSession:
    """Empty every pane; the next message starts a new round. A stream still running
    changes nothing from now on (its round ended)."""
    end_round(session)
    for pane in session.panes:
        pane.history, pane.turns = [], []
        pane.set(PaneState.IDLE)
    session.revealed = not session.blind
    return session


def vote(session: ArenaSession, store: VoteStore, best: str, worst: str, config_hash: str, parent_refs: list[str]) -> str:
    """Record a verdict on this round and reveal the names. `best` is a display name
    ("Model 2"), "tie" or "all bad" and must be chosen; `worst` is a display name or "".
    Returns why the vote was flagged ('' when it counts)."""
    if not session.blind:
        raise UserError("vote", "votes are for blind rounds", "tick Blind mode, then send a message")
    if session.revealed:
        raise UserError("vote", "this round is already judged", "press Clear to start the next blind round")
    if not session.replies_in():
        raise UserError("vote", "there are no replies to judge yet", "send a message and wait for the replies")
    if session.failed():  # a dead pane would count as beaten
        raise UserError("vote", "a model failed in this round, so it cannot be judged", "press Clear and send the message again")
    active = [p for p in session.panes if p.active and p.history]
    chosen = verdicts(best, worst, {f"Model {i + 1}": p.label for i, p in enumerate(session.panes) if p in active})
    models = {p.label: p.ref for p in active}
    replies = {p.label: p.history[-1]["content"] for p in active}
    round_replies = {p.label: "\n".join(m["content"] for m in p.history if m["role"] == "assistant") for p in active}
    flagged = identity_leak(round_replies, [p.ref for p in active if p.label != "Merged"])
    store.record(config_hash, session.last_prompt(), chosen, models, replies, active[0].turns[-1].settings, flagged)
    session.votes.append({"prompt": session.last_prompt(), "verdicts": chosen, "models": models, "flagged": flagged})
    session.revealed = True
    for pane in session.panes:  # the errors hidden during the round
        for message, turn in zip([m for m in pane.history if m["role"] == "assistant"], pane.turns, strict=False):
            if turn.error:
                message["content"] = f"⚠️ {turn.error}"
    return flagged


def reply(session: ArenaSession, settings: GenerationSettings, system_prompt: str = "",
          stream: Callable[[RepliesRequest], Iterator[list[Reply]]] = stream_replies,
          round: Round | None = None) -> Iterator[ArenaSession]:
    """Answer every pane waiting for a reply: load the models here, then stream through the
    GPU boundary. `round` (a new one by default) becomes the session's current round, and
    is done at the end unless a Stop, a Clear or a newer round ended it first. Each reply
    goes into its own message and turn objects, so a Clear meanwhile only detaches them;
    nothing is indexed that could be gone."""
    round = round or Round()
    if round.phase is Phase.STOPPED:  # stopped before it began
        return
    session.current, round.phase = round, Phase.STREAMING
    try:
        yield from _answer(session, round, settings, system_prompt, stream)
    finally:
        if session.current is round:
            round.phase, session.current = Phase.DONE, None


def _answer(session: ArenaSession, round: Round, settings: GenerationSettings, system_prompt: str,
            stream: Callable[[RepliesRequest], Iterator[list[Reply]]]) -> Iterator[ArenaSession]:
    loaded: list[tuple[Pane, ChatModel]] = []
    refused = ""
    for pane in session.waiting():
        pane.set(PaneState.LOADING, f"loading {pane.ref} ({pane.precision})…")
        yield session
        try:
            model = yield from _load(session, round, pane)
        except UserError as exc:  # shown in this pane; the others still answer
            pane.set(PaneState.FAILED, str(exc))
            if session.current is round:
                refused = pane.history.pop()["content"]
            continue
        if session.current is not round:
            return
        pane.set(PaneState.IDLE)
        loaded.append((pane, model))
    if not loaded:
        if refused:
            session.unsent.append(refused)
        yield session
        return
    if session.current is not round:  # a Stop took its message back out of the panes
        return
    prompt = loaded[0][0].history[-1]["content"]  # the message being answered (a pane switched off may hold an older one)
    check_fits([(pane.label, model) for pane, model in loaded if isinstance(model, LoadedModel)], prompt, system_prompt,
               settings.max_new_tokens, not session.revealed)
    request = RepliesRequest(tuple(PaneRequest(p.ref, p.precision, tuple(p.history), f"{session.name}/{p.label}") for p, _ in loaded),
                             settings, system_prompt)
    messages, turns = [], []
    for pane, model in loaded:
        turn = Turn(prompt, asdict(settings), system_prompt)
        if isinstance(model, EndpointModel):
            turn.backend, turn.served_by = "OpenAI-compatible endpoint", model.served_by
        else:
            turn.precision, turn.backend, turn.weight_mb = model.report.precision, model.report.backend, model.report.weight_bytes / 1e6
        turns.append(turn)
        messages.append({"role": "assistant", "content": ""})
        pane.history.append(messages[-1])
        pane.turns.append(turns[-1])
    with contextlib.ExitStack() as held:
        for pane, _ in loaded:  # until its first words: said, not left at "loading" (a long prompt takes a while)
            pane.set(PaneState.READING)
            held.callback(_done_reading, pane)
        yield session
        if session.current is not round:
            return
        for _, model in loaded:  # busy here too: a worker process's own count does not reach this cache
            if isinstance(model, LoadedModel):
                held.enter_context(model.in_use())
        snapshots = held.enter_context(contextlib.closing(stream(request)))
        pace = SharedPace() if not session.revealed else None
        replies: list[Reply] = []
        try:
            for replies in snapshots:
                if session.current is not round:
                    return
                _show(session, loaded, messages, turns, replies, pace)
                yield session
            while pace is not None and replies and not pace.caught_up(replies):  # what faster panes wrote ahead
                time.sleep(FRAME_S)
                if session.current is not round:
                    return
                _show(session, loaded, messages, turns, replies, pace)
                yield session
        except UserError as exc:  # refused at the GPU boundary (the visitor's ZeroGPU quota), or raised in its worker
            if session.current is not round:
                return
            for message, turn in zip(messages, turns, strict=True):  # it names no model: said in blind panes too
                message["content"] = "\n\n".join(filter(None, [message["content"], f"⚠️ {exc}"]))
                turn.error, turn.done = str(exc), True
            yield session
            return
        for (_, model), turn in zip(loaded, turns, strict=True):
            if isinstance(model, LoadedModel) and turn.tokens_per_s:
                model.measured_tokens_per_s = turn.tokens_per_s
        record_prefills([(model, one) for (_, model), one in zip(loaded, replies, strict=False) if isinstance(model, LoadedModel)])


def _done_reading(pane: Pane) -> None:
    if pane.state is PaneState.READING:
        pane.set(PaneState.IDLE)


def check_access_to(ref: str) -> None:
    """A model in memory or on this disk is served only to a visitor who may download it;
    a merge made here (its mergekit_config.yml, a t-preview's `#t=` aside) counts as its
    parents, whose weights it carries."""
    check_hub_access(ref)
    config = Path(ref.split("#")[0].strip()) / "mergekit_config.yml"
    if config.is_file():
        try:
            parents = parse_config(config.read_text()).models
        except UserError:  # not a config of ours: it names no parent to check
            return
        for parent in parents:
            check_hub_access(parent)


def _load(session: ArenaSession, round: Round, pane: Pane) -> Iterator[ArenaSession]:
    """The pane's model from the shared cache, loaded in a thread while this yields the
    session as a Hub download advances (its load line: MB, MB/s, time left). Closing this
    (a Stop, a Clear) cancels the download; the next try resumes it."""
    done, cancelled, result = threading.Event(), threading.Event(), {}
    loading = f"loading {pane.ref} ({pane.precision})"

    def report(progress: Progress) -> None:
        if session.current is round:  # a download's line after a Stop would say it still loads
            pane.set(PaneState.LOADING, f"{loading}: {progress.line()}")

    def load() -> None:
        try:
            with as_visitor(session.token), watching(pane.ref, report, cancelled):
                check_access_to(pane.ref)
                result["model"] = cache.MODELS.get(pane.ref, pane.precision)
        except BaseException as exc:  # noqa: BLE001 -- raised again in the session's thread
            result["error"] = exc
        finally:
            done.set()

    threading.Thread(target=load, daemon=True, name=f"load {pane.ref}").start()
    try:
        while not done.wait(0.25):
            yield session
    finally:
        cancelled.set()  # a no-op once loaded
    if "error" in result:
        raise result["error"]
    return result["model"]


def _show(session: ArenaSession, loaded: list[tuple[Pane, ChatModel]], messages: list[dict], turns: list[Turn],
          replies: list[Reply], pace: SharedPace | None) -> None:
    """A snapshot into the panes: blind ones at the shared pace, their turns' figures
    (tokens, speed) only once every text is shown whole."""
    texts = pace.texts(replies, time.monotonic()) if pace else [one.text for one in replies]
    whole = pace is None or pace.caught_up(replies)
    for (pane, _), message, turn, one, text in zip(loaded, messages, turns, replies, texts, strict=True):
        pane.set(PaneState.READING if not text and not one.done else PaneState.IDLE)
        message["content"] = text if not one.error else f"⚠️ {one.error}" if session.revealed else HIDDEN_ERROR
        if whole:
            _fill(turn, one)


def _fill(turn: Turn, reply: Reply) -> None:
    s = reply.stats
    turn.tokens, turn.first_token_s, turn.tokens_per_s, turn.cached_tokens = s.new_tokens, s.first_token_s, s.tokens_per_s, s.cached_tokens
    turn.stopped, turn.error, turn.notice, turn.done = reply.stopped, reply.error, reply.notice, reply.done
