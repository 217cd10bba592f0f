"""One visitor's chat, from Send to the last token, without Gradio: what the page and the
`/chat` API both call.

How a message is answered, as FastChat's arena does it: Send (or Enter, or Regenerate)
takes it at once as a queued Round (`take`, `take_regenerate`); a second, queued step
answers the oldest (`answer_next`), so every message is answered once and in order.
Stop and Clear are one call each: they end the current round (`round is
arena.current` no longer holds, so its stream changes nothing after) and drop the
queued ones. The page turns this into views (ui/chat_actions.py)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass

from arena.prompt_fit import check_fits, prefill_remark
from arena.rounds import (
    ArenaSession,
    PaneState,
    Phase,
    Round,
    add_message,
    clear,
    put_back_replies,
    reply,
    stop,
    take_back_message,
    take_back_replies,
)
from arena.votes import PANE_LABELS
from core.errors import UserError
from core.policy import check_models
from inference import GenerationSettings, cache
from inference.loading import LoadedModel

MAX_SEED = 2**31 - 1
DEFAULTS = GenerationSettings()  # the sampling a first visitor gets
DOUBLE_S = 0.5  # a double click sends the same text twice within this
TURN_POLL_S = 0.05  # a stream step waiting for this visitor's step before it
MERGE_WAIT_S = 600  # a message sent during the first chat's default merge waits this long for it at most
WAITING_FOR_MERGE = "⏳ waiting for the first-chat merge (the line above the panes says when it is done)"


@dataclass(frozen=True)
class ChatRequest:
    """What a chat action reads from the page: the system prompt, the sampling, the three
    panes' models, switches and precisions, in the page's input order."""
    system_prompt: str = ""
    temperature: float = DEFAULTS.temperature
    top_p: float = DEFAULTS.top_p
    max_new_tokens: int = DEFAULTS.max_new_tokens
    seed: int = DEFAULTS.seed
    repetition_penalty: float = DEFAULTS.repetition_penalty
    merged: str = ""
    parent_a: str = ""
    parent_b: str = ""
    merged_on: bool = True
    parent_a_on: bool = True
    parent_b_on: bool = True
    merged_precision: str = "auto"
    parent_precision: str = "bf16"
    lock_seed: bool = False  # Regenerate and blind rounds keep the seed box's seed

    def any_on(self) -> bool:
        refs, switches = (self.merged, self.parent_a, self.parent_b), (self.merged_on, self.parent_a_on, self.parent_b_on)
        return any(on and ref.strip() for ref, on in zip(refs, switches, strict=True))

    def caution(self, blind: bool) -> str:
        """What weakens a blind round: replies that can repeat, word for word, one seen named before."""
        if not blind:
            return ""
        if float(self.temperature) == 0:
            return " Temperature 0 (greedy) repeats a reply word for word, so one seen named before is recognised: blindness is weaker."
        if self.lock_seed:
            return " The seed is locked, so a reply seen named before can come back word for word: blindness is weaker."
        return ""

    def settings(self, seed: int | None = None) -> GenerationSettings:
        """The sampling settings; a seed outside 0 … 2^31-1 (or none: a number box that
        could not hold what was typed) is refused, naming the field."""
        seed = self.seed if seed is None else seed
        if seed is None or not 0 <= float(seed) <= MAX_SEED or float(seed) != int(float(seed)):
            shown = "empty" if seed is None else f"'{float(seed):.15g}'"  # 1e+23, not its float's 24 digits
            raise UserError("seed", f"{shown} is not a whole number from 0 to {MAX_SEED}", "type a seed such as 0 or 1234")
        return GenerationSettings(temperature=float(self.temperature), top_p=float(self.top_p), max_new_tokens=int(self.max_new_tokens),
                                  seed=int(float(seed)), repetition_penalty=float(self.repetition_penalty))

    def configure(self, arena: ArenaSession) -> None:
        """Point the panes at their models; a refused or missing source leaves its pane idle
        with the reason shown under it, while the other panes answer."""
        refs = [self.merged, self.parent_a, self.parent_b]
        sources, problems = [], []
        for ref in refs:
            try:
                check_models(ref.strip())
                sources.append(ref.strip())
                problems.append("")
            except UserError as exc:
                sources.append("")
                problems.append(str(exc))
        precisions = [self.merged_precision, self.parent_precision, self.parent_precision]
        switches = [self.merged_on, self.parent_a_on, self.parent_b_on]
        arena.configure(dict(zip(PANE_LABELS, sources, strict=True)), dict(zip(PANE_LABELS, precisions, strict=True)),
                        dict(zip(PANE_LABELS, switches, strict=True)))
        for label, problem in zip(PANE_LABELS, problems, strict=True):
            if problem:
                arena.pane(label).set(PaneState.FAILED, problem)


class ChatSession:
    """Per visitor (gr.State): their arena, their t-preview model, and the rounds waiting
    for a stream step, oldest first. A plain class: Gradio serializes dataclass states."""

    def __init__(self) -> None:
        self.arena = ArenaSession()
        self.preview = None  # this visitor's in-memory t-preview model, freed when replaced
        self.queue: list[Round] = []
        self.taking = threading.Lock()  # Sends run in parallel threads: each joins the queue whole, in turn
        self.last_taken: tuple[str, float] = ("", 0.0)
        # While the first chat's default merge runs (ui/first_run.py): the three models it
        # fills in, for a message sent before the page has them (None: it filled nothing).
        self.merged_coming: Future[tuple[str, str, str] | None] | None = None

    @property
    def current(self) -> Round | None:
        return self.arena.current

    @property
    def busy(self) -> bool:
        return self.current is not None or bool(self.queue)

    def queued_messages(self) -> list[str]:
        return [r.message for r in self.queue if r.message]

    def unshown_messages(self) -> list[str]:
        """The messages taken and not yet in the panes, oldest first: the current round's while
        it waits for the first-chat merge, then the queue's."""
        current = self.current
        return ([current.message] if current is not None and current.phase is Phase.QUEUED and current.message else []) + \
            self.queued_messages()

    def expect_merged(self) -> None:
        """The first chat's default merge has started (the tab opened again while it runs: the
        same one): a message sent until it ends waits for the models it fills in."""
        if self.merged_coming is None:
            self.merged_coming = Future()

    def merged_arrived(self, models: tuple[str, str, str] | None) -> None:
        """The default merge has ended: the (merged, parent A, parent B) it filled in (None:
        nothing) to the messages that waited."""
        coming, self.merged_coming = self.merged_coming, None
        if coming is not None:
            coming.set_result(models)

    def drop_queue(self) -> list[str]:
        """The queued rounds end unanswered; returns their messages, oldest first."""
        messages = self.queued_messages()
        for waiting in self.queue:
            waiting.phase = Phase.STOPPED
        self.queue.clear()
        return messages

    def __deepcopy__(self, memo: dict) -> ChatSession:  # gr.State copies its default per session
        return ChatSession()


def take(message: str, request: ChatRequest, session: ChatSession) -> Round | None:
    """A message queued for its stream step (None: the same text again within DOUBLE_S, a
    double click), or a UserError naming the field. Idle, the panes are pointed at the
    page's models now, so the message shows where it will be answered; busy, its stream
    step does that."""
    with session.taking:
        last, at = session.last_taken
        if session.busy and message == last and time.monotonic() - at < DOUBLE_S:  # the first is still on its way
            return None
        waiting = queue_message(message, request, session)
        session.last_taken = (message, time.monotonic())
        return waiting


def queue_message(message: str, request: ChatRequest, session: ChatSession) -> Round:
    """The checks of a Send, then its round in the queue (under `session.taking`)."""
    if not message.strip():
        raise UserError("message", "empty message", "type a message before sending")
    request.settings()
    if not session.busy:
        request.configure(session.arena)
    coming = session.merged_coming if request.merged_on and not request.merged.strip() else None
    if not (coming or (request.any_on() if session.busy else any(p.active for p in session.arena.panes))):
        raise UserError("panes", "no model is switched on", "open Models, tick at least one pane and give it a model")
    # The panes whose models are loaded already say now whether the message fits (the others once loaded).
    loaded = [(p.label, model) for p in session.arena.panes if p.active
              and isinstance(model := cache.MODELS.peek(p.ref, p.precision), LoadedModel)]
    tokens = check_fits(loaded, message, request.system_prompt, int(request.max_new_tokens), session.arena.blind)
    waiting = Round(message, blind_seed(request, session), prefill_remark(loaded, tokens) + request.caution(session.arena.blind),
                    merged_coming=coming)
    if coming and not session.busy:
        session.arena.pane("Merged").set(PaneState.LOADING, WAITING_FOR_MERGE)
    session.queue.append(waiting)
    return waiting


def blind_seed(request: ChatRequest, session: ChatSession) -> int | None:
    """A blind round's replies sample with a fresh seed, so a reply seen named before does
    not come back word for word; a locked seed keeps the page's (and says so)."""
    if not session.arena.blind or request.lock_seed:
        return None
    return session.arena.rng.randrange(MAX_SEED)


def take_regenerate(request: ChatRequest, session: ChatSession) -> Round:
    """The last message queued to be answered again, with a new seed unless locked; the
    stream step replaces the last replies, so a Stop before it begins leaves them."""
    if session.busy:
        raise UserError("regenerate", "replies are still on their way", "press it once they are in, or press Stop first")
    request.settings(None if request.lock_seed else 0)  # unlocked, it draws its own seed: the box may be empty
    if not any(p.active and p.history for p in session.arena.panes):
        raise UserError("regenerate", "there is no message to answer again", "send a message first")
    seed = int(request.seed) if request.lock_seed else session.arena.rng.randrange(MAX_SEED)
    waiting = Round("", seed, remark=request.caution(session.arena.blind))
    session.queue.append(waiting)
    return waiting


def next_round(session: ChatSession) -> Round | None:
    """The oldest queued round, once this visitor's round before it has ended (other
    visitors' stream beside it); None when nothing waits (a Stop or Clear came first)."""
    while True:
        with session.taking:
            if not session.queue:
                return None
            if session.current is None:
                waiting = session.arena.current = session.queue.pop(0)
                return waiting
        time.sleep(TURN_POLL_S)


def answer(request: ChatRequest, session: ChatSession, waiting: Round) -> Iterator[ArenaSession]:
    """Answer `waiting` in every pane that is on, yielding as the panes change. A refusal
    (too long for a model now loaded, every pane off, a seed emptied) takes the message
    back out of the panes, puts it in `unsent` for the box, and is raised."""
    if waiting.phase is Phase.STOPPED:  # a Stop or Clear came between its turn and its start
        return
    added = False
    try:
        if waiting.merged_coming is not None:
            request = yield from with_merged(request, session, waiting)
            if waiting.phase is Phase.STOPPED:
                return
        waiting.phase = Phase.STREAMING  # from here its message is in the panes (a Stop takes it back until a reply begins)
        if waiting.message:  # the page's models as they are now; Regenerate answers with the panes as they were
            request.configure(session.arena)
            add_message(session.arena, waiting.message)
            added = True
        else:
            waiting.taken = take_back_replies(session.arena)
        yield from reply(session.arena, request.settings(waiting.seed), request.system_prompt, round=waiting)
    except UserError:
        if added:
            take_back_message(session.arena, waiting.message)
        put_back_replies(waiting.taken)
        if waiting.message:
            session.arena.unsent.append(waiting.message)
        raise
    finally:
        if session.current is waiting:  # refused before its replies began
            waiting.phase, session.arena.current = Phase.DONE, None


def with_merged(request: ChatRequest, session: ChatSession, waiting: Round) -> Iterator[ArenaSession]:
    """The request with the three models the first-chat merge filled in (the Merged field
    was empty when the message was sent), once that merge is written; unchanged where it
    filled nothing (it failed, or the visitor chose other models). The Merged pane says it
    waits; a Stop ends the wait."""
    pane, deadline = session.arena.pane("Merged"), time.monotonic() + MERGE_WAIT_S
    try:
        while waiting.phase is not Phase.STOPPED:
            try:
                models = waiting.merged_coming.result(timeout=TURN_POLL_S)
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise UserError("merged model", f"the first-chat merge is still running after {MERGE_WAIT_S // 60} minutes",
                                    "send the message again once the line above the panes says it is done") from None
                pane.set(PaneState.LOADING, WAITING_FOR_MERGE)
                yield session.arena
                continue
            return request if models is None else dataclasses.replace(request, merged=models[0], parent_a=models[1],
                                                                        parent_b=models[2])
        return request
    finally:
        if pane.state is PaneState.LOADING:
            pane.set(PaneState.IDLE)


def stop_replies(session: ChatSession) -> list[str]:
    """Stop: the replies end where they are, marked stopped; returns the messages that
    still waited (the current one too, if no reply to it had begun), oldest first, for
    the box."""
    waiting = session.unshown_messages()
    session.drop_queue()
    unbegun = stop(session.arena)  # its models still loading: no reply had begun
    return ([unbegun] if unbegun else []) + waiting


def clear_chat(session: ChatSession) -> None:
    """Empty the panes and the queue; the next message starts a new round."""
    session.drop_queue()
    clear(session.arena)


def set_blind(blind: bool, session: ChatSession) -> None:
    session.drop_queue()
    session.arena.set_blind(blind)


def put_back(session: ChatSession) -> list[str]:
    """After a stream: the messages no pane could take (every model failed to load, each
    pane says why, or the prompt did not fit), oldest first, for the box."""
    unsent, session.arena.unsent = session.arena.unsent, []
    return unsent


def into_box(messages: list[str], typed: str) -> str | None:
    """Messages going back into the message box, one per line, oldest first, before
    anything typed since, to send again; None leaves the box as it is."""
    return "\n".join([*messages, typed] if (typed or "").strip() else messages) if messages else None


def caution_note(blind: bool, lock_seed: bool, temperature: float) -> str:
    """Said as soon as blind mode meets a locked seed or greedy sampling, not only while replies stream."""
    caution = dataclasses.replace(ChatRequest(), lock_seed=lock_seed, temperature=temperature).caution(blind)
    return f"⚠️{caution}" if caution else ""
