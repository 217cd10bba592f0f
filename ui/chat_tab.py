"""The Chat tab: the merged model beside its parents, each through its own chat template;
blind rounds with votes, export, and an instant t-preview of the merge.

How a reply runs, as FastChat's arena does it: Send (or Enter, or Regenerate) first takes
the message at once, then answers it in a second, queued step. Messages sent while replies
stream wait in the session's queue, shown in the panes, and each stream step answers the
oldest, so every message is answered once and in order. Regenerate and the blind switch
are off while anything streams or waits. Stop cancels the streams (Gradio `cancels`),
which closes them and ends the generation wherever it runs (arena/replies.py), and puts
the waiting messages back in the box; Clear empties the panes and the queue, and a
cancelled stream changes nothing after it (its round is no longer the session's)."""

from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path

import gradio as gr

from arena.prompt_fit import check_fits, prefill_remark
from arena.ratings import CARD_MARKER, card_section, config_results, plot_html, table_markdown
from arena.rounds import (
    ALL_BAD,
    TIE,
    ArenaSession,
    add_message,
    clear,
    export_json,
    export_markdown,
    put_back_replies,
    reply,
    stop,
    take_back_message,
    take_back_replies,
    vote,
)
from arena.votes import PANE_LABELS, app_store, config_hash, held_line
from core.errors import UserError
from core.sources import ENDPOINT_FORM
from evaluation import defaults
from evaluation.prompt_set import CHAT_EXAMPLES, read_prompts
from inference import GenerationSettings, cache
from inference.loading import LoadedModel, load_with_weights
from merging.form import config_from_form, form_from_yaml
from merging.merge import merge_in_memory
from merging.model_card import replace_section
from ui.context import PRIVATE, chat_queue, check_models, shown_as_toast

CHAT_PRECISIONS = ["auto", "fp8", "int8", "bf16"]
PREVIEW_MAX_BYTES = 2 * 10**9  # in-memory t-previews: small models only
CHAT_HEIGHT = 330  # px: three panes, the message box and Send fit a 1400x900 screen
MAX_SEED = 2**31 - 1
DEFAULTS = GenerationSettings()  # the sampling a first visitor gets
NO_MERGE_HINT = "No merged model yet: run a merge on the Merge tab and press 'Chat with this merge', or open Models and type a folder."
# At most this often a stream step sends the page a view (three chats, whole): a page that
# falls behind a faster stream shows its views late, after a click made meanwhile (seen in
# Chromium on 2 busy cores: a vote's refusal overwritten by a stream's last view, 2 s late).
VIEW_INTERVAL_S = 0.1
TURN_POLL_S = 0.05  # a stream step waiting for this visitor's step before it
# Sent, the box empties in the page at once, as Send reads it: a server's "" arriving after
# the visitor had typed the next message wiped it (seen in Chromium on a busy host: the next
# Send sent ""). The step's own values go on to the server unchanged.
CLEAR_BOX = """(...values) => {
  const box = document.querySelector('#chat-message textarea');
  box.value = '';
  box.dispatchEvent(new Event('input', {bubbles: true}));
  return values.slice(0, %d);
}"""
DOUBLE_S = 0.5
STREAMING_NOTE = (
    "⏳ Replies are on their way (while another visitor has the device, each pane shows your place in the queue): "
    "send your next message when you like, it is answered after these; **Stop** ends them now.")


@dataclass(frozen=True)
class ChatRequest:
    """What a chat action reads from the page: the system prompt, the sampling, the three
    panes' models, switches and precisions. Built in one place (`from_page`), in the order
    of `ChatControls.inputs()`."""
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

    @classmethod
    def from_page(cls, *values) -> ChatRequest:
        return cls(*values)

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
                problems.append(f"⚠️ {exc}")
        precisions = [self.merged_precision, self.parent_precision, self.parent_precision]
        switches = [self.merged_on, self.parent_a_on, self.parent_b_on]
        arena.configure(dict(zip(PANE_LABELS, sources, strict=True)), dict(zip(PANE_LABELS, precisions, strict=True)),
                        dict(zip(PANE_LABELS, switches, strict=True)))
        for label, problem in zip(PANE_LABELS, problems, strict=True):
            if problem:
                arena.pane(label).notice = problem


@dataclass(frozen=True)
class Waiting:
    """A Send or Regenerate taken at once, for its stream step to answer."""
    message: str  # '' for Regenerate: the last message is answered again
    seed: int | None  # what it samples with (None: the page's seed box)
    remark: str = ""  # said while it streams: a long prefill's wait, what weakens this blind round


class ChatSession:
    """Per visitor (gr.State): their arena, their t-preview model, and what waits for a
    stream step, oldest first. A plain class: Gradio serializes dataclass states."""

    def __init__(self) -> None:
        self.arena = ArenaSession()
        self.preview = None  # this visitor's in-memory t-preview model, freed when replaced
        self.queue: list[Waiting] = []
        self.current: Waiting | None = None  # the one streaming now
        self.taking = threading.Lock()  # Sends run in parallel threads: each joins the queue whole, in turn
        self.last_taken: tuple[str, float] = ("", 0.0)  # a double click sends the same text twice within DOUBLE_S

    @property
    def streaming(self) -> bool:
        return self.current is not None

    @property
    def busy(self) -> bool:
        return self.streaming or bool(self.queue)

    def queued_messages(self) -> list[str]:
        return [w.message for w in self.queue if w.message]

    def __deepcopy__(self, memo: dict) -> ChatSession:  # gr.State copies its default per session
        return ChatSession()


@dataclass
class ChatView:
    """What every chat action shows, field by field, in the order of `ChatControls.outputs()`.
    Pane titles change, and the vote choices reset, only when a round starts or is revealed
    (`relabel`) or a stream starts; otherwise chats stay plain histories, so API clients get
    plain histories."""
    chats: list  # per pane: its history, or a gr.Chatbot update that also sets its title
    stats: list[str]
    voting: bool | None  # the vote row is shown (None: left as it is)
    reset_vote: bool  # best / worst choices emptied
    note: str | None  # the line under the message box (None: left as it is)
    busy: bool | None  # replies stream or wait: Regenerate and blind off (Send queues, Clear empties); None: left as they are
    seed: int | None = None  # shown in the seed box (the seed drawn for these replies)

    def updates(self) -> tuple:
        choice = gr.Radio(value=None) if self.reset_vote else gr.Radio()
        buttons = (gr.skip(),) * 4 if self.busy is None else (
            gr.Button(interactive=True), gr.Button(interactive=not self.busy), gr.Button(interactive=True),
            gr.Checkbox(interactive=not self.busy))
        row = gr.skip() if self.voting is None else gr.Row(visible=self.voting)
        return (*self.chats, *self.stats, row, choice, choice,
                gr.skip() if self.note is None else self.note, *buttons, gr.skip() if self.seed is None else self.seed)


def refused(why: str) -> ChatView:
    """A refused action: the reason on the line under the message box, where the visitor is
    looking (a toast also says it), and nothing else changed."""
    return ChatView([gr.skip()] * 3, [gr.skip()] * 3, None, False, f"⚠️ {why}", None)


def view(session: ChatSession, relabel: bool = False, note: str | None = None, seed: int | None = None,
         ended: bool = False) -> ChatView:
    """The session as the page shows it: each pane's history, then the messages waiting
    for their turn (in the panes that are on). `ended`: the stream step has returned, so
    the vote row may appear (not with the stream's last snapshot)."""
    arena = session.arena
    waiting = [{"role": "user", "content": f"{text}\n\n*⏳ waiting its turn*"} for text in session.queued_messages()]
    histories = [p.history + waiting if waiting and p.active else p.history for p in arena.panes]
    chats = ([gr.Chatbot(value=h, label=label) for h, label in zip(histories, arena.display_labels(), strict=True)]
             if relabel else histories)
    # Its choices are emptied only when a round or a stream starts: a choice made as the row appeared is kept.
    voting = (arena.blind and not arena.revealed and ended and not session.busy and arena.replies_in()
              and not arena.failed())
    if note is None and session.busy:
        note = streaming_note(session)
    return ChatView(chats, arena.statuses(), voting, relabel and not arena.revealed, note, session.busy, seed)


def streaming_note(session: ChatSession) -> str:
    waiting = len(session.queued_messages()) - (0 if session.streaming else 1)
    more = f" {waiting} more message{'s' if waiting > 1 else ''} waiting: answered in order." if waiting > 0 else ""
    first = session.current or (session.queue[0] if session.queue else None)
    return STREAMING_NOTE + more + (first.remark if first else "")


def take_message(message: str, request: ChatRequest, session: ChatSession) -> tuple[str | None, ChatView | None]:
    """Send's first step, at once: the message waits in the session's queue, shown in the
    panes, and the box empties; its stream step answers it after those before it. Refused
    (empty, a bad seed, no pane on): a warning, the reason under the box, and the box keeps
    what was typed. Returns (box, view); None leaves a thing as it is."""
    try:
        waiting = take(message, request, session)
    except UserError as exc:  # a warning, not an error: an error would badge every output red
        gr.Warning(str(exc))
        return None, refused(str(exc))
    if waiting is None:  # the second click of a double click: taken once
        return "", None
    return "", view(session, relabel=session.arena.blind and not session.streaming, seed=waiting.seed)


def take(message: str, request: ChatRequest, session: ChatSession) -> Waiting | None:
    """A message queued for its stream step (None: the same text again within DOUBLE_S, a
    double click), or a UserError naming the field. Idle, the panes are pointed at the
    page's models now, so the message shows where it will be answered; busy, its stream
    step does that."""
    with session.taking:
        last, at = session.last_taken
        if session.busy and message == last and time.monotonic() - at < DOUBLE_S:  # the first is still on its way
            return None
        waiting = _take(message, request, session)
        session.last_taken = (message, time.monotonic())
        return waiting


def _take(message: str, request: ChatRequest, session: ChatSession) -> Waiting:
    if not message.strip():
        raise UserError("message", "empty message", "type a message before sending")
    request.settings()
    if not session.busy:
        request.configure(session.arena)
    if not (request.any_on() if session.busy else any(p.active for p in session.arena.panes)):
        raise UserError("panes", "no model is switched on", "open Models, tick at least one pane and give it a model")
    # The panes whose models are loaded already say now whether the message fits (the others once loaded).
    loaded = [(p.label, model) for p in session.arena.panes if p.active
              and isinstance(model := cache.MODELS.peek(p.ref, p.precision), LoadedModel)]
    tokens = check_fits(loaded, message, request.system_prompt, int(request.max_new_tokens), session.arena.blind)
    waiting = Waiting(message, blind_seed(request, session), prefill_remark(loaded, tokens) + request.caution(session.arena.blind))
    session.queue.append(waiting)
    return waiting


def blind_seed(request: ChatRequest, session: ChatSession) -> int | None:
    """A blind round's replies sample with a fresh seed, so a reply seen named before does
    not come back word for word; a locked seed keeps the page's (and says so)."""
    if not session.arena.blind or request.lock_seed:
        return None
    return session.arena.rng.randrange(MAX_SEED)


def take_regenerate(request: ChatRequest, session: ChatSession) -> ChatView | None:
    """Regenerate's first step, at once: a new seed is drawn (unless locked); the stream
    step replaces the last replies, so a Stop before it begins leaves them."""
    if session.busy:
        gr.Warning("Regenerate waits for the replies on their way: press it once they are in, or press Stop first.")
        return None
    try:
        waiting = regenerating(request, session)
    except UserError as exc:
        gr.Warning(str(exc))
        return refused(str(exc))
    return view(session, relabel=session.arena.blind, seed=waiting.seed)


def regenerating(request: ChatRequest, session: ChatSession) -> Waiting:
    """The last message queued to be answered again, or a UserError naming the field."""
    request.settings(None if request.lock_seed else 0)  # unlocked, it draws its own seed: the box may be empty
    if not any(p.active and p.history for p in session.arena.panes):
        raise UserError("regenerate", "there is no message to answer again", "send a message first")
    seed = int(request.seed) if request.lock_seed else session.arena.rng.randrange(MAX_SEED)
    waiting = Waiting("", seed, remark=request.caution(session.arena.blind))
    session.queue.append(waiting)
    return waiting


def stream(request: ChatRequest, session: ChatSession):
    """A stream step (queued on the device): the oldest waiting message (or Regenerate) is
    answered in every pane that is on; yields ChatViews. Nothing waiting (a Stop or Clear
    came first): one view that changes nothing."""
    waiting = None
    while waiting is None:  # this visitor's steps answer in order, one at a time (other visitors' run beside them)
        with session.taking:
            if not session.queue:
                break
            if session.current is None:  # a Stop or Clear frees the turn at once
                waiting = session.current = session.queue.pop(0)
        if waiting is None:
            time.sleep(TURN_POLL_S)
    if waiting is None:
        yield ChatView([gr.skip()] * 3, [gr.skip()] * 3, None, False, None, None)
        return
    note, added, taken = "", False, []
    try:
        if waiting.message:  # the page's models as they are now; Regenerate answers with the panes as they were
            request.configure(session.arena)
            add_message(session.arena, waiting.message)
            added = True
        else:
            taken = take_back_replies(session.arena)
        shown = 0.0
        for _ in reply(session.arena, request.settings(waiting.seed), request.system_prompt):
            if time.monotonic() - shown >= VIEW_INTERVAL_S:  # views are whole states: skipping one loses nothing
                shown = time.monotonic()
                # The line under the box is written when a message is taken and when a step ends, not by
                # these: one still on its way to the page when Stop or Clear lands cannot bring it back.
                yield dataclasses.replace(view(session), note=None)
    except UserError as exc:  # too long for a model now loaded, or the page changed (every pane off, a seed emptied)
        gr.Warning(str(exc))
        note = f"⚠️ {exc}"
        if added:
            take_back_message(session.arena, waiting.message)
        put_back_replies(taken)
        if waiting.message:
            session.arena.unsent.append(waiting.message)  # back into the box
    finally:
        ours = session.current is waiting  # not after a Stop or Clear (a newer stream may have begun since)
        if ours:
            session.current = None
    # After a Stop or Clear the line under the box is theirs: an abandoned stream's last view leaves it.
    yield view(session, note=None if not ours else note or (None if session.busy else ""), seed=waiting.seed, ended=True)


def stop_replies(typed: str, session: ChatSession) -> tuple[str | None, ChatView]:
    """Stop (the page cancels the streams): the replies end where they are, marked stopped.
    The messages still waiting go back into the box, oldest first, before anything typed
    since. Returns (box, view); None leaves the box as it is."""
    waiting = session.queued_messages()
    session.queue.clear()
    session.current = None  # the page cancels the stream; its generator may end later, and changes nothing
    stop(session.arena)
    box = "\n".join([*waiting, typed] if typed else waiting) if waiting else None
    back = f"⏹ Stopped. The {len(waiting)} messages that waited are back in the box, one per line: send them again." if len(
        waiting) > 1 else "⏹ Stopped. The message that waited is back in the box." if waiting else ""
    return box, view(session, note=back)


def stream_done(session: ChatSession) -> ChatView:
    """After a stream step, once the page has its end: the buttons as the session now is
    (another message may be streaming already), the vote row once all is in."""
    return view(session, ended=True)


def put_back(typed: str, session: ChatSession) -> str | None:
    """After a stream: the messages no pane could take (every model failed to load, each
    pane says why, or the prompt did not fit) go back into the box, oldest first, before
    anything typed since, to send again once fixed; None leaves the box."""
    unsent, session.arena.unsent = session.arena.unsent, []
    return "\n".join([*unsent, typed] if (typed or "").strip() else unsent) if unsent else None


def clear_chat(session: ChatSession) -> ChatView:
    """Empty the panes and the queue (the page cancels the streams); the next message starts a new round."""
    session.queue.clear()
    session.current = None
    clear(session.arena)
    return view(session, relabel=True, note="")


def set_blind(blind: bool, session: ChatSession, lock_seed: bool = False, temperature: float = DEFAULTS.temperature) -> ChatView:
    session.queue.clear()
    session.current = None
    session.arena.set_blind(blind)
    return view(session, relabel=True, note=caution_note(blind, lock_seed, temperature))


def caution_note(blind: bool, lock_seed: bool, temperature: float) -> str:
    """Said as soon as blind mode meets a locked seed or greedy sampling, not only while replies stream."""
    caution = dataclasses.replace(ChatRequest(), lock_seed=lock_seed, temperature=temperature).caution(blind)
    return f"⚠️{caution}" if caution else ""


# The `chat` and `regenerate` API: both steps in one call, with the parameters the API has
# always had (message first, then the page's fields in ChatControls order).
def chat(message: str, system_prompt: str, temperature: float, top_p: float, max_new_tokens: float, seed: float,
         merged_ref: str, parent_a_ref: str, parent_b_ref: str, merged_on: bool, parent_a_on: bool, parent_b_on: bool,
         merged_precision: str, parent_precision: str, session: ChatSession, repetition_penalty: float = DEFAULTS.repetition_penalty):
    """Answer `message` in every switched-on pane; yields the chat outputs (3 chats, 3
    stats, vote row, best, worst, note, buttons, seed)."""
    request = ChatRequest(system_prompt, temperature, top_p, max_new_tokens, seed, repetition_penalty, merged_ref, parent_a_ref,
                          parent_b_ref, merged_on, parent_a_on, parent_b_on, merged_precision, parent_precision)
    if session.busy:
        raise gr.Error("chat: replies are still streaming in this session — wait for them, or stop them first")
    try:
        with session.taking:  # an API client sends on purpose: no double-click guard
            waiting = _take(message, request, session)
    except UserError as exc:
        raise gr.Error(str(exc)) from None
    yield view(session, relabel=session.arena.blind, seed=waiting.seed).updates()
    yield from (v.updates() for v in stream(request, session))


def regenerate_last(system_prompt: str, temperature: float, top_p: float, max_new_tokens: float, seed: float, lock_seed: bool,
                    session: ChatSession, repetition_penalty: float = DEFAULTS.repetition_penalty):
    """Answer the last message again: a new seed unless `lock_seed` (shown in the seed output)."""
    request = dataclasses.replace(ChatRequest(), system_prompt=system_prompt, temperature=temperature, top_p=top_p,
                                  max_new_tokens=max_new_tokens, seed=seed, repetition_penalty=repetition_penalty,
                                  lock_seed=lock_seed)
    if session.busy:
        raise gr.Error("regenerate: replies are still streaming in this session — wait for them, or stop them first")
    try:
        waiting = regenerating(request, session)
    except UserError as exc:
        raise gr.Error(str(exc)) from None
    for v in stream(request, session):
        yield dataclasses.replace(v, seed=waiting.seed).updates()


def show_results(merged_ref: str, include_flagged: bool) -> tuple[str, str]:
    """The plot and table for the Merged pane's merge config."""
    if not merged_ref.strip():
        return "", "Results appear here once a merged model is in the Merged pane and blind rounds have been voted on."
    store = app_store()
    res = config_results(store, config_hash(merged_ref.strip()), include_flagged)
    return plot_html(res), f"{table_markdown(res)}\n\n{held_line(store)}"


def submit_vote(best: str, worst: str, include_flagged: bool, session: ChatSession) -> tuple[ChatView | None, str, str]:
    """Record the vote, reveal the names, and show the results of this merge config:
    (view, plot, table). A refused vote changes nothing but the note (view.note)."""
    merged = session.arena.pane("Merged").ref
    try:
        flagged = vote(session.arena, app_store(), best or "", worst or "", config_hash(merged),
                       [session.arena.pane(label).ref for label in PANE_LABELS[1:]])
    except UserError as exc:
        gr.Warning(str(exc))
        return refused(f"Vote refused: {exc}"), gr.skip(), gr.skip()
    note = (f"🚩 Vote kept but flagged ({flagged}): left out of the results by default." if flagged
            else "Vote recorded. Press Clear for the next blind round.")
    return view(session, relabel=True, note=note), *show_results(merged, include_flagged)


@shown_as_toast
def add_results_to_card(merged_ref: str, include_flagged: bool) -> str:
    """Write the current figures into the merged folder's README.md (its arena section
    replaced, never appended twice)."""
    folder = Path(merged_ref.split("#")[0].strip())
    readme = folder / "README.md"
    if not merged_ref.strip() or not (folder / "mergekit_config.yml").is_file() or not readme.is_file():
        raise UserError("model card", "the Merged pane is not a merge made here", "run a merge, then 'Chat with this merge'")
    check_models(str(folder))
    res = config_results(app_store(), config_hash(str(folder)), include_flagged)
    if not res.pairs:
        raise UserError("model card", "no counted votes for this merge yet", "vote in a few blind rounds first")
    readme.write_text(replace_section(readme.read_text(), CARD_MARKER, card_section(res)))
    return f"Written to `{readme}`: {res.sentence()}"


def export_session(session: ChatSession):
    """The conversation of every pane, per-reply settings and votes, as Markdown and JSON
    files; anonymous (Model 1/2/3) before a blind round is revealed."""
    folder = Path(tempfile.mkdtemp(prefix="slerp-arena-export-"))
    (folder / "comparison.md").write_text(export_markdown(session.arena))
    (folder / "comparison.json").write_text(export_json(session.arena))
    return gr.File(value=[str(folder / "comparison.md"), str(folder / "comparison.json")], visible=True)


def open_chat(merged_ref: str, own: str, session: ChatSession) -> tuple:
    """On page load: the Merged pane gets this browser's latest merge (`own`, as its storage
    kept it), else the latest merge offered to everyone from outputs/, or says what to do."""
    ref = merged_ref.strip() or defaults.own_merge(own) or defaults.latest_merge()
    if not ref:
        session.arena.pane("Merged").notice = NO_MERGE_HINT
    return ref, *session.arena.statuses(), *show_results(ref, False)


def drop_no_merge_hint(merged_ref: str, session: ChatSession) -> list[str]:
    """A model in the Merged field (the first-chat merge, a link, a typed folder) makes
    open_chat's "No merged model yet" line stale."""
    pane = session.arena.pane("Merged")
    if merged_ref.strip() and pane.notice == NO_MERGE_HINT:
        pane.notice = ""
    return session.arena.statuses()


def preview_curves(merged_ref: str) -> tuple:
    """The t-preview's fields for the Merged pane's model: its merge's own t curves (a merge
    made here), so a preview starts from what is loaded; left as they are for anything else
    (a t-preview of it, a Hub id, an endpoint)."""
    config_file = Path(merged_ref.strip()) / "mergekit_config.yml"
    if "#" in merged_ref or not merged_ref.strip() or not config_file.is_file():
        return gr.skip(), gr.skip(), gr.skip()
    try:
        form = form_from_yaml(config_file.read_text())
    except UserError:
        return gr.skip(), gr.skip(), gr.skip()
    return form.self_attn, form.mlp, form.default


@shown_as_toast
def preview_t(attn: str, mlp: str, default: str, merged_ref: str, merged_precision: str, session: ChatSession):
    """Re-merge the Merged pane's model in memory at a new t curve and swap it in (on the
    CPU, in this process: no GPU quota). Returns (new Merged source, a message with the timings)."""
    folder = Path(merged_ref.split("#t=")[0].strip())
    config_file = folder / "mergekit_config.yml"
    if not config_file.is_file():
        raise UserError("t-preview", "the Merged pane is not a merge made here", "run a merge, then 'Chat with this merge'")
    check_models(str(folder))
    form = dataclasses.replace(form_from_yaml(config_file.read_text()), self_attn=attn, mlp=mlp, default=default)
    started = time.perf_counter()
    weights = merge_in_memory(config_from_form(form), PREVIEW_MAX_BYTES)
    merged_s = time.perf_counter() - started
    name = f"{folder}#t=self_attn[{attn}] mlp[{mlp}] default[{default}]"
    # The shared cache's device, as every other load: on ZeroGPU the main process's (emulated) cuda.
    loaded = load_with_weights(str(folder), weights, merged_precision, name, cache.MODELS.device)
    if session.preview is not None:
        cache.MODELS.unload(session.preview)
    cache.MODELS.add(name, merged_precision, loaded)
    session.preview = loaded
    total = time.perf_counter() - started
    return name, (f"Re-merged in memory in {merged_s:.2f} s, loaded as {loaded.report.precision} in {total - merged_s:.2f} s "
                  f"(swap: {total:.2f} s). Send a message to chat with it.")


@dataclass
class ChatControls:
    """The components a chat action reads (in ChatRequest's field order) and writes (in
    ChatView's order)."""
    system_prompt: gr.Textbox
    temperature: gr.Slider
    top_p: gr.Slider
    max_new_tokens: gr.Slider
    seed: gr.Number
    repetition_penalty: gr.Slider
    merged: gr.Textbox
    parent_a: gr.Textbox
    parent_b: gr.Textbox
    merged_on: gr.Checkbox
    parent_a_on: gr.Checkbox
    parent_b_on: gr.Checkbox
    merged_precision: gr.Dropdown
    parent_precision: gr.Dropdown
    lock_seed: gr.Checkbox
    bots: list[gr.Chatbot]
    stats: list[gr.Markdown]
    vote_row: gr.Row
    best: gr.Radio
    worst: gr.Radio
    note: gr.Markdown
    send: gr.Button
    regenerate: gr.Button
    clear: gr.Button
    blind: gr.Checkbox

    def inputs(self) -> list:
        return [getattr(self, f.name) for f in fields(ChatRequest)]

    def outputs(self) -> list:
        return [*self.bots, *self.stats, self.vote_row, self.best, self.worst, self.note, self.send, self.regenerate, self.clear,
                self.blind, self.seed]


def _shown(views):
    """A handler's ChatViews as the page's output tuples (plain handlers and generators)."""
    if isinstance(views, ChatView):
        return views.updates()
    return (v.updates() for v in views)


@dataclass
class ChatTab:
    """The components app.py links to the Merge tab."""
    merged_ref: gr.Textbox
    parent_a: gr.Textbox
    parent_b: gr.Textbox
    blind: gr.Checkbox
    session: gr.State


def build_chat_tab(demo: gr.Blocks, own_merge: gr.BrowserState) -> ChatTab:
    session = gr.State(ChatSession())
    with gr.Row(equal_height=True):
        blind = gr.Checkbox(False, label="Blind mode: shuffled, unnamed panes; vote, then see the names", scale=3)
        system_prompt = gr.Textbox("", label="System prompt", placeholder="optional", scale=4, lines=1, max_lines=3)
    with gr.Accordion("Models: merged folder, parents, precision, panes on/off", open=False):
        with gr.Row():
            merged_ref = gr.Textbox("", label="Merged model (folder)", elem_id="chat-merged",
                                    placeholder=f"run a merge, or type a folder / Hub id / endpoint {ENDPOINT_FORM}")
            chat_a = gr.Textbox(defaults.DEFAULT_A, label="Parent A", elem_id="chat-parent-a",
                                placeholder=f"folder, Hub id or {ENDPOINT_FORM}")
            chat_b = gr.Textbox(defaults.DEFAULT_B, label="Parent B", elem_id="chat-parent-b",
                                placeholder=f"folder, Hub id or {ENDPOINT_FORM}")
        with gr.Row():
            merged_precision = gr.Dropdown(CHAT_PRECISIONS, value="auto", label="Merged precision (auto: FP8 if native, else int8)")
            parent_precision = gr.Dropdown(CHAT_PRECISIONS, value="bf16", label="Parents' precision")
            switches = [gr.Checkbox(True, label=f"{label} on") for label in PANE_LABELS]
    bots, stats = [], []
    with gr.Row(elem_id="chat-panes"):
        for label in PANE_LABELS:
            with gr.Column(min_width=300):
                bots.append(gr.Chatbot(label=label, height=CHAT_HEIGHT, buttons=["copy", "copy_all"],
                                       placeholder="Replies appear here: type below and press Send."))
                stats.append(gr.Markdown(elem_classes=["pane-stats"]))
    with gr.Row(equal_height=True):
        message = gr.Textbox(label="Message", show_label=False,
                             placeholder="Ask all models at once… (Enter sends)",
                             scale=6, lines=1, max_lines=4, container=False, elem_id="chat-message")
        send_button = gr.Button("Send", variant="primary", scale=1, min_width=90)
        stop_button = gr.Button("Stop", scale=0, min_width=70)
        regen_button = gr.Button("Regenerate", scale=0, min_width=110)
        lock_seed = gr.Checkbox(False, label="lock seed", scale=0, min_width=110, container=False)
        clear_button = gr.Button("Clear", scale=0, min_width=70, elem_id="chat-clear")
        # One click to deterministic replies (temperature 0 and no penalty: plain greedy).
        greedy_button = gr.Button("Greedy", scale=0, min_width=80, elem_id="chat-greedy")
    note = gr.Markdown(elem_id="chat-note")
    # Prompts on which the demo's merge answers on topic in the pirate's voice: the blend shows.
    gr.Examples([[case.text] for case in read_prompts(CHAT_EXAMPLES, "chat examples")], inputs=message,
                label="Suggestions (click one, then Send)", elem_id="chat-examples")
    with gr.Row(visible=False, equal_height=True) as vote_row:
        best = gr.Radio(["Model 1", "Model 2", "Model 3", TIE, ALL_BAD], value=None, label="Best reply (required)", scale=3,
                        elem_id="vote-best")
        worst = gr.Radio(["Model 1", "Model 2", "Model 3"], value=None, label="Worst reply (optional)", scale=2)
        vote_button = gr.Button("Vote and reveal", variant="primary", scale=1)
    with gr.Accordion("Results: does the merge beat its parents?", open=False):
        with gr.Row():
            include_flagged = gr.Checkbox(False, label="count flagged votes (replies that named a model or maker)")
            refresh_button = gr.Button("Refresh results", size="sm")
            card_button = gr.Button("Add arena results to the model card", size="sm")
        results_plot = gr.HTML()
        results_table = gr.Markdown()
        card_message = gr.Markdown()
    with gr.Accordion("Sampling (shared by all panes)", open=False):
        with gr.Row():
            temperature = gr.Slider(0, 2, DEFAULTS.temperature, step=0.05, label="temperature (0 = greedy)")
            top_p = gr.Slider(0.05, 1, DEFAULTS.top_p, step=0.05, label="top_p")
            repetition_penalty = gr.Slider(1, 2, DEFAULTS.repetition_penalty, step=0.05, label="repetition penalty (1 = off)")
        with gr.Row():
            max_new_tokens = gr.Slider(1, 1024, DEFAULTS.max_new_tokens, step=1, label="max new tokens")
            # No minimum/maximum: Gradio's own range check is a bare "Error" toast naming no field;
            # the handlers refuse a bad seed in one line (ChatRequest.settings) and keep the message.
            seed = gr.Number(DEFAULTS.seed, label="seed (Regenerate draws a new one unless locked)", precision=0)
            defaults_button = gr.Button("Default sampling", size="sm", scale=0, min_width=150)
    with gr.Accordion("Export this comparison (Markdown + JSON)", open=False):
        export_button = gr.Button("Export", size="sm")
        export_files = gr.File(label="Exported files", file_count="multiple", interactive=False, visible=False)
    with gr.Accordion("Instant t-preview: re-merge the merged model in memory at a new t", open=False):
        with gr.Row():
            preview_attn = gr.Textbox("0, 0.5, 1, 0.5, 0", label="t for self_attn", elem_id="preview-attn")
            preview_mlp = gr.Textbox("0.5", label="t for mlp", elem_id="preview-mlp")
            preview_default = gr.Textbox("0.5", label="t for the rest", elem_id="preview-default")
            preview_button = gr.Button("Preview")
        preview_message = gr.Markdown()

    controls = ChatControls(system_prompt, temperature, top_p, max_new_tokens, seed, repetition_penalty, merged_ref, chat_a, chat_b,
                            *switches, merged_precision, parent_precision, lock_seed, bots, stats, vote_row, best, worst, note,
                            send_button, regen_button, clear_button, blind)
    inputs, outputs = controls.inputs(), controls.outputs()
    n = len(inputs)

    def on_send(message_text, *values):
        # The page empties the box itself as the message leaves (CLEAR_BOX); a refused one is put back.
        box, shown = take_message(message_text, ChatRequest.from_page(*values[:n]), values[n])
        return gr.skip() if box == "" else message_text, *(shown.updates() if shown else (gr.skip(),) * len(outputs))

    def on_regenerate(*values):
        shown = take_regenerate(ChatRequest.from_page(*values[:n]), values[n])
        return shown.updates() if shown else (gr.skip(),) * len(outputs)

    def on_stream(*values):
        yield from _shown(stream(ChatRequest.from_page(*values[:n]), values[n]))

    def on_vote(best_choice, worst_choice, flagged, state):
        shown, plot, table = submit_vote(best_choice, worst_choice, flagged, state)
        return *shown.updates(), plot, table

    # The stream step runs on the device queue; Stop cancels it (and the stream step it
    # may be waiting behind); the step after it turns the buttons on once the page has the end.
    streams = []
    for trigger in (send_button.click, message.submit):
        # "multiple", on each step: every Send and Enter is taken and answered, also while an earlier one's
        # steps are pending (Gradio's default, "once", drops the new one without a word).
        taken = trigger(on_send, [message, *inputs, session], [message, *outputs], api_visibility=PRIVATE, concurrency_limit=None,
                        trigger_mode="multiple", js=CLEAR_BOX % (len(inputs) + 2))
        streams.append(taken.then(on_stream, [*inputs, session], outputs, api_visibility=PRIVATE, trigger_mode="multiple",
                                  **chat_queue()))
    taken = regen_button.click(on_regenerate, [*inputs, session], outputs, api_visibility=PRIVATE, concurrency_limit=None)
    streams.append(taken.then(on_stream, [*inputs, session], outputs, api_visibility=PRIVATE, **chat_queue()))
    def on_done(typed, state):
        box = put_back(typed, state)
        return gr.skip() if box is None else box, *stream_done(state).updates()

    for event in streams:
        # No progress dots: the replies are complete, and dots under them read as another reply coming.
        event.then(on_done, [message, session], [message, *outputs], api_visibility=PRIVATE, concurrency_limit=None,
                   show_progress="hidden", trigger_mode="multiple")

    def on_stop(typed, state):
        box, shown = stop_replies(typed, state)
        return gr.skip() if box is None else box, *shown.updates()

    stop_button.click(on_stop, [message, session], [message, *outputs], cancels=streams, api_visibility=PRIVATE,
                      concurrency_limit=None)
    for clearing in (clear_button.click, *[bot.clear for bot in bots]):  # a pane's trash icon clears the arena too
        clearing(lambda state: clear_chat(state).updates(), session, outputs, cancels=streams, api_visibility=PRIVATE,
                 concurrency_limit=None)
    blind.input(lambda on, lock, t, state: set_blind(on, state, lock, t).updates(), [blind, lock_seed, temperature, session], outputs,
                cancels=streams, api_visibility=PRIVATE, concurrency_limit=None)
    gr.on([lock_seed.input, temperature.release], lambda on, lock, t: caution_note(on, lock, t) if on else gr.skip(),
          [blind, lock_seed, temperature], note, api_visibility=PRIVATE, queue=False, show_progress="hidden")
    vote_button.click(on_vote, [best, worst, include_flagged, session], [*outputs, results_plot, results_table], api_visibility=PRIVATE)

    # The API: `chat` and `regenerate`, hidden buttons whose parameters are unchanged.
    api_chat = gr.Button(visible=False)
    api_chat.click(chat, [message, *inputs[:5], merged_ref, chat_a, chat_b, *switches, merged_precision, parent_precision, session,
                          repetition_penalty], outputs, api_name="chat", **chat_queue())
    api_regen = gr.Button(visible=False)
    api_regen.click(regenerate_last, [system_prompt, temperature, top_p, max_new_tokens, seed, lock_seed, session, repetition_penalty],
                    outputs, api_name="regenerate", **chat_queue())

    for refresh in (refresh_button.click, include_flagged.change):
        refresh(show_results, [merged_ref, include_flagged], [results_plot, results_table], api_visibility=PRIVATE)
    card_button.click(add_results_to_card, [merged_ref, include_flagged], card_message, api_visibility=PRIVATE)
    export_button.click(export_session, session, export_files, api_visibility=PRIVATE)
    merged_ref.change(preview_curves, merged_ref, [preview_attn, preview_mlp, preview_default], api_visibility=PRIVATE,
                      queue=False)
    preview_button.click(preview_t, [preview_attn, preview_mlp, preview_default, merged_ref, merged_precision, session],
                         [merged_ref, preview_message], api_visibility=PRIVATE, concurrency_id="device", concurrency_limit=1)
    greedy_button.click(lambda: (0, 1.0), None, [temperature, repetition_penalty], api_visibility=PRIVATE)
    defaults_button.click(lambda: (DEFAULTS.temperature, DEFAULTS.top_p, DEFAULTS.repetition_penalty), None,
                          [temperature, top_p, repetition_penalty], api_visibility=PRIVATE)
    demo.load(open_chat, [merged_ref, own_merge, session], [merged_ref, *stats, results_plot, results_table], api_visibility=PRIVATE)
    merged_ref.change(drop_no_merge_hint, [merged_ref, session], stats, api_visibility=PRIVATE, concurrency_limit=None)
    return ChatTab(merged_ref, chat_a, chat_b, blind, session)
