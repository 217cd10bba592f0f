"""The chat's handlers: arena/chat_session.py's calls, shown as the page's outputs. Plain
functions that tests call; ui/chat_tab.py wires them to the components.

Send (or Enter, or Regenerate) takes the message at once; a second, queued step answers
it (`stream`). Stop cancels the streams (Gradio `cancels`), which closes them and ends
the generation wherever it runs (inference/replies.py); Clear empties the panes and the
queue. Either ends the session's current round, so a cancelled stream changes nothing
after it."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from arena import chat_session
from arena.chat_session import ChatRequest, ChatSession, caution_note, into_box
from arena.export import export_json, export_markdown
from arena.rounds import PaneState, vote
from arena.votes import PANE_LABELS, app_store, config_hash
from core.errors import UserError
from evaluation import defaults
from ui.chat_results import show_results

NO_MERGE_HINT = "No merged model yet: run a merge on the Merge tab and press 'Chat with this merge', or open Models and type a folder."
# At most this often a stream step sends the page a view (three chats, whole): a page that
# falls behind a faster stream shows its views late, after a click made meanwhile (seen in
# Chromium on 2 busy cores: a vote's refusal overwritten by a stream's last view, 2 s late).
VIEW_INTERVAL_S = 0.1
STREAMING_NOTE = (
    "⏳ Replies are on their way (while another visitor has the device, each pane shows your place in the queue): "
    "send your next message when you like, it is answered after these; **Stop** ends them now.")


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
        choice = gr.Radio(value=None) if self.reset_vote else gr.skip()
        buttons = (gr.skip(),) * 4 if self.busy is None else (
            gr.Button(interactive=True), gr.Button(interactive=not self.busy), gr.Button(interactive=True),
            gr.Checkbox(interactive=not self.busy))
        row = gr.skip() if self.voting is None else gr.Row(visible=self.voting)
        return (*self.chats, *self.stats, row, choice, choice,
                gr.skip() if self.note is None else self.note, *buttons, gr.skip() if self.seed is None else self.seed)

    def streamed(self) -> tuple:
        """What a stream step sends (`ChatControls.stream_outputs()`, the API's outputs too):
        chats, stats, the note and the seed. The buttons and the vote row are the steps'
        around it: Gradio builds a component for every update, even a skip, ten views a
        second per visitor."""
        return (*self.chats, *self.stats, gr.skip() if self.note is None else self.note,
                gr.skip() if self.seed is None else self.seed)


UNCHANGED = ChatView([gr.skip()] * 3, [gr.skip()] * 3, None, False, None, None)


def refused(why: str, what: str = "") -> ChatView:
    """A refused action: the reason on the line under the message box, where the visitor is
    looking, after `what` was refused (a toast also says why), and nothing else changed."""
    gr.Warning(why)  # a warning, not an error: an error would badge every output red
    return dataclasses.replace(UNCHANGED, note=f"⚠️ {what}{why}")


def view(session: ChatSession, relabel: bool = False, note: str | None = None, seed: int | None = None,
         ended: bool = False) -> ChatView:
    """The session as the page shows it: each pane's history, then the messages waiting
    for their turn (in the panes that are on). `ended`: the stream step has returned, so
    the vote row may appear (not with the stream's last snapshot)."""
    arena = session.arena
    waiting = [{"role": "user", "content": f"{text}\n\n*⏳ waiting its turn*"} for text in session.unshown_messages()]
    # A pane loading (the Merged one waiting for the first-chat merge too) shows them as well.
    histories = [p.shown() + waiting if waiting and (p.active or p.state is PaneState.LOADING) else p.shown() for p in arena.panes]
    chats = ([gr.Chatbot(value=h, label=label) for h, label in zip(histories, arena.display_labels(), strict=True)]
             if relabel else histories)
    # Its choices are emptied only when a round or a stream starts: a choice made as the row appeared is kept.
    voting = (arena.blind and not arena.revealed and ended and not session.busy and arena.replies_in()
              and not arena.failed())
    if note is None and session.busy:
        note = streaming_note(session)
    return ChatView(chats, arena.statuses(), voting, relabel and not arena.revealed, note, session.busy, seed)


def streaming_note(session: ChatSession) -> str:
    waiting = len(session.queued_messages()) - (0 if session.current else 1)
    more = f" {waiting} more message{'s' if waiting > 1 else ''} waiting: answered in order." if waiting > 0 else ""
    first = session.current or (session.queue[0] if session.queue else None)
    return STREAMING_NOTE + more + (first.remark if first else "")


def take_message(message: str, request: ChatRequest, session: ChatSession) -> tuple[str | None, ChatView | None]:
    """Send's first step, at once: the message waits in the session's queue, shown in the
    panes, and the box empties. Refused (empty, a bad seed, no pane on): the reason under
    the box, and the box keeps what was typed. Returns (box, view); None leaves a thing."""
    try:
        waiting = chat_session.take(message, request, session)
    except UserError as exc:
        return None, refused(str(exc))
    if waiting is None:  # the second click of a double click: taken once
        return "", None
    return "", view(session, relabel=session.arena.blind and not session.current, seed=waiting.seed)


def take_regenerate(request: ChatRequest, session: ChatSession) -> ChatView:
    """Regenerate's first step, at once: a new seed is drawn (unless locked)."""
    try:
        waiting = chat_session.take_regenerate(request, session)
    except UserError as exc:
        return refused(str(exc))
    return view(session, relabel=session.arena.blind, seed=waiting.seed)


def stream(request: ChatRequest, session: ChatSession):
    """A stream step (queued): the oldest waiting message (or Regenerate) is answered in
    every pane that is on; yields ChatViews. Nothing waiting (a Stop or Clear came first):
    one view that changes nothing."""
    waiting = chat_session.next_round(session)
    if waiting is None:
        yield UNCHANGED
        return
    note = ""
    try:
        shown = 0.0
        for _ in chat_session.answer(request, session, waiting):
            if time.monotonic() - shown >= VIEW_INTERVAL_S:  # views are whole states: skipping one loses nothing
                shown = time.monotonic()
                # The line under the box is written when a message is taken and when a step ends, not by
                # these: one still on its way to the page when Stop or Clear lands cannot bring it back.
                yield dataclasses.replace(view(session), note=None)
    except UserError as exc:
        gr.Warning(str(exc))
        note = f"⚠️ {exc}"
    # After a Stop or Clear the line under the box is theirs: a stopped round's last view leaves it.
    ours = waiting.phase is not chat_session.Phase.STOPPED
    yield view(session, note=None if not ours else note or (None if session.busy else ""), seed=waiting.seed, ended=True)


def stop_replies(typed: str, session: ChatSession) -> tuple[str | None, ChatView]:
    """Stop (the page cancels the streams). Returns (box, view); None leaves the box."""
    waiting = chat_session.stop_replies(session)
    note = (f"⏹ Stopped. The {len(waiting)} messages that waited are back in the box, one per line: send them again."
            if len(waiting) > 1 else "⏹ Stopped. The message that waited is back in the box." if waiting else "")
    return into_box(waiting, typed), view(session, note=note)


def stream_done(typed: str, session: ChatSession) -> tuple[str | None, ChatView]:
    """After a stream step, once the page has its end: what no pane took back in the box
    (None: the box as it is), the buttons as the session now is (another message may be
    streaming already), the vote row once all is in."""
    return into_box(chat_session.put_back(session), typed), view(session, ended=True)


def clear_chat(session: ChatSession) -> ChatView:
    chat_session.clear_chat(session)
    return view(session, relabel=True, note="")


def set_blind(blind: bool, session: ChatSession, lock_seed: bool = False,
              temperature: float = chat_session.DEFAULTS.temperature) -> ChatView:
    chat_session.set_blind(blind, session)
    return view(session, relabel=True, note=caution_note(blind, lock_seed, temperature))


# The `chat` and `regenerate` API: both steps in one call, through the page's own path,
# with the parameters the API has always had.
def chat(message: str, system_prompt: str, temperature: float, top_p: float, max_new_tokens: float, seed: float,
         merged_ref: str, parent_a_ref: str, parent_b_ref: str, merged_on: bool, parent_a_on: bool, parent_b_on: bool,
         merged_precision: str, parent_precision: str, session: ChatSession,
         repetition_penalty: float = chat_session.DEFAULTS.repetition_penalty):
    """Answer `message` in every switched-on pane; yields the stream outputs (3 chats, 3
    stats, the note, the seed)."""
    request = ChatRequest(system_prompt, temperature, top_p, max_new_tokens, seed, repetition_penalty, merged_ref, parent_a_ref,
                          parent_b_ref, merged_on, parent_a_on, parent_b_on, merged_precision, parent_precision)
    try:
        if session.busy:
            raise UserError("chat", "replies are still streaming in this session", "wait for them, or stop them first")
        with session.taking:  # an API client sends on purpose: no double-click guard
            waiting = chat_session.queue_message(message, request, session)
    except UserError as exc:
        raise gr.Error(str(exc)) from None
    yield view(session, relabel=session.arena.blind, seed=waiting.seed).streamed()
    yield from (v.streamed() for v in stream(request, session))


def regenerate_last(system_prompt: str, temperature: float, top_p: float, max_new_tokens: float, seed: float, lock_seed: bool,
                    session: ChatSession, repetition_penalty: float = chat_session.DEFAULTS.repetition_penalty):
    """Answer the last message again: a new seed unless `lock_seed` (shown in the seed output)."""
    request = dataclasses.replace(ChatRequest(), system_prompt=system_prompt, temperature=temperature, top_p=top_p,
                                  max_new_tokens=max_new_tokens, seed=seed, repetition_penalty=repetition_penalty,
                                  lock_seed=lock_seed)
    try:
        waiting = chat_session.take_regenerate(request, session)
    except UserError as exc:
        raise gr.Error(str(exc)) from None
    for v in stream(request, session):
        yield dataclasses.replace(v, seed=waiting.seed).streamed()


def submit_vote(best: str, worst: str, include_flagged: bool, session: ChatSession) -> tuple[ChatView | None, str, str]:
    """Record the vote, reveal the names, and show the results of this merge config:
    (view, plot, table). A refused vote changes nothing but the note (view.note)."""
    merged = session.arena.pane("Merged").ref
    try:
        flagged = vote(session.arena, app_store(), best or "", worst or "", config_hash(merged),
                       [session.arena.pane(label).ref for label in PANE_LABELS[1:]])
    except UserError as exc:
        return refused(str(exc), "Vote refused: "), gr.skip(), gr.skip()
    note = (f"🚩 Vote kept but flagged ({flagged}): left out of the results by default." if flagged
            else "Vote recorded. Press Clear for the next blind round.")
    return view(session, relabel=True, note=note), *show_results(merged, include_flagged)


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
