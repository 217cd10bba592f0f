"""The Chat tab: the merged model beside its parents, each through its own chat template;
blind rounds with votes, export, and an instant t-preview of the merge."""

from __future__ import annotations

import dataclasses
import functools
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from core.errors import UserError
from core.sources import ENDPOINT_FORM
from inference import GenerationSettings
from inference.loading import load_with_weights
from merging.form import config_from_form, form_from_yaml
from merging.merge import merge_in_memory
from merging.model_card import replace_section
from ui import context
from ui.arena import ALL_BAD, TIE, ArenaSession, clear, export_json, export_markdown, regenerate, send, vote
from ui.context import DEFAULT_A, DEFAULT_B, PRIVATE, check_models, shown_as_toast
from ui.ratings import CARD_MARKER, card_section, config_results, plot_html, table_markdown
from ui.votes import PANE_LABELS, VoteStore, config_hash
from ui.zerogpu import CHAT_SECONDS, gpu

CHAT_PRECISIONS = ["auto", "fp8", "int8", "bf16"]
PREVIEW_MAX_BYTES = 2 * 10**9  # in-memory t-previews: small models only
CHAT_HEIGHT = 330  # px: three panes, the message box and Send fit a 1400x900 screen
STOP_WAIT_S = 60.0  # Clear / Regenerate wait this long at most for stopped replies to end
SHOWN_WAIT_S = 10.0  # … and this long at most for the page to confirm it has the stream's end
DEFAULTS = GenerationSettings()  # the sampling a first visitor gets
NO_MERGE_HINT = "No merged model yet: run a merge on the Merge tab and press 'Chat with this merge', or open Models and type a folder."


class ChatSession:
    """Per visitor (gr.State): their panes, their t-preview model, the event their Stop
    sets, the messages waiting for the device, and whether a reply is running. A plain
    class: Gradio serializes dataclass states, and Events don't."""

    def __init__(self) -> None:
        self.arena = ArenaSession()
        self.preview = None  # this visitor's in-memory t-preview model, freed when replaced
        self.stop = threading.Event()
        self.idle = threading.Event()  # cleared while this visitor's replies stream
        self.idle.set()
        # Page streams begun whose end the page has not confirmed yet (page_stream): a
        # count, as one stream's confirmation can arrive after the next one has begun.
        self.unconfirmed = 0
        self.confirmed = threading.Condition()
        self.pending: list[str] = []  # sent while replies streamed: answered next, in order, never dropped

    def __deepcopy__(self, memo: dict) -> ChatSession:  # gr.State copies its default per session
        return ChatSession()

    def wait_idle(self) -> None:
        """Stop this visitor's running replies and wait until their threads have ended and
        the page has the stream's end. Gradio re-sends a stream's last view once it has
        ended; a view returned before that message left was overwritten by it (a CI run:
        a Clear that woke as the replies ended showed them back, for good)."""
        self.stop.set()
        self.idle.wait(timeout=STOP_WAIT_S)
        with self.confirmed:
            self.confirmed.wait_for(lambda: self.unconfirmed == 0, timeout=SHOWN_WAIT_S)


def _settings(temperature: float, top_p: float, max_new_tokens: float, seed: float, repetition_penalty: float) -> GenerationSettings:
    return GenerationSettings(temperature=float(temperature), top_p=float(top_p), max_new_tokens=int(max_new_tokens), seed=int(seed),
                              repetition_penalty=float(repetition_penalty))


def _configure(session: ChatSession, refs: list[str], merged_precision: str, parent_precision: str, enabled: list[bool]) -> None:
    """Point the panes at their models; a refused or missing source leaves its pane idle
    with the reason shown under it, while the other panes answer."""
    sources, problems = [], []
    for ref in refs:
        try:
            check_models(ref.strip())
            sources.append(ref.strip())
            problems.append("")
        except UserError as exc:
            sources.append("")
            problems.append(f"⚠️ {exc}")
    labels = list(PANE_LABELS)
    session.arena.configure(dict(zip(labels, sources, strict=True)),
                            dict(zip(labels, [merged_precision, parent_precision, parent_precision], strict=True)),
                            dict(zip(labels, enabled, strict=True)))
    for label, problem in zip(labels, problems, strict=True):
        if problem:
            session.arena.pane(label).notice = problem


def _pending_line(session: ChatSession) -> str:
    if not session.pending:
        return ""
    return "⏳ Waiting to be sent when the replies are in: " + " · ".join(f"“{m[:60]}”" for m in session.pending)


def _view(session: ChatSession, relabel: bool = False) -> tuple:
    """Three chat histories, three stats lines, the vote row, the two vote choices, the
    pending line. Pane titles change, and the vote choices reset, only when a round
    starts or is revealed (`relabel`); chat updates stay plain values otherwise, so API
    clients get plain histories."""
    arena = session.arena
    bots = ([gr.Chatbot(value=p.history, label=label) for p, label in zip(arena.panes, arena.display_labels(), strict=True)]
            if relabel else [p.history for p in arena.panes])
    voting = arena.blind and not arena.revealed and arena.replies_in()
    reset = [gr.Radio(value=None), gr.Radio(value=None)] if relabel and not arena.revealed else [gr.Radio(), gr.Radio()]
    return (*bots, *arena.statuses(), gr.Row(visible=voting), *reset, _pending_line(session))


def _left_alone() -> tuple:
    """A chat view (as `_view` gives) that changes nothing on the page."""
    return tuple(gr.skip() for _ in range(len(PANE_LABELS) * 2 + 4))


def queue_message(message: str, session: ChatSession) -> tuple[str, str]:
    """Send's first step, at once even while replies stream: the message joins this
    visitor's queue (shown as pending) and the box empties."""
    if not message.strip():  # a warning, not an error: an error would badge every output red
        gr.Warning(str(UserError("message", "empty message", "type a message before sending")))
        return gr.skip(), gr.skip()
    session.pending.append(message)
    return "", _pending_line(session)


@gpu(CHAT_SECONDS)
@shown_as_toast
def chat(message: str, system_prompt: str, temperature: float, top_p: float, max_new_tokens: float, seed: float,
         merged_ref: str, parent_a_ref: str, parent_b_ref: str, merged_on: bool, parent_a_on: bool, parent_b_on: bool,
         merged_precision: str, parent_precision: str, session: ChatSession, repetition_penalty: float = DEFAULTS.repetition_penalty):
    """The `chat` API: answer `message` (after any queued ones) in every switched-on pane;
    yields (3 chats, 3 stats, vote row, best, worst, pending line)."""
    if not message.strip():
        raise UserError("message", "empty message", "type a message before sending")
    session.pending.append(message)
    yield from answer_pending(system_prompt, temperature, top_p, max_new_tokens, seed, merged_ref, parent_a_ref, parent_b_ref,
                              merged_on, parent_a_on, parent_b_on, merged_precision, parent_precision, session, repetition_penalty)


@gpu(CHAT_SECONDS)
@shown_as_toast
def answer_pending(system_prompt: str, temperature: float, top_p: float, max_new_tokens: float, seed: float,
                   merged_ref: str, parent_a_ref: str, parent_b_ref: str, merged_on: bool, parent_a_on: bool, parent_b_on: bool,
                   merged_precision: str, parent_precision: str, session: ChatSession,
                   repetition_penalty: float = DEFAULTS.repetition_penalty):
    """Send's second step: answer every queued message, in order (nothing queued: the
    outputs left alone: an earlier run took the message, and a view from here could land
    after a Clear's)."""
    if not session.pending:
        yield _left_alone()
        return
    _configure(session, [merged_ref, parent_a_ref, parent_b_ref], merged_precision, parent_precision, [merged_on, parent_a_on, parent_b_on])
    settings = _settings(temperature, top_p, max_new_tokens, seed, repetition_penalty)
    session.idle.clear()
    try:
        yield _view(session)
        while session.pending:
            rounds = session.arena.rounds
            session.stop.clear()
            text = session.pending.pop(0)
            for _ in send(session.arena, context.MODELS, text, settings, system_prompt, session.stop):
                yield _view(session, relabel=session.arena.rounds != rounds)
                rounds = session.arena.rounds
            yield _view(session, relabel=session.arena.blind)
    finally:
        session.idle.set()


@gpu(CHAT_SECONDS)
@shown_as_toast
def regenerate_stopped(system_prompt: str, temperature: float, top_p: float, max_new_tokens: float, seed: float, lock_seed: bool,
                       session: ChatSession, repetition_penalty: float = DEFAULTS.repetition_penalty):
    """Answer the last message again, once the running replies have stopped
    (`stopped_replies`: the page's Regenerate waits in a step of its own, before its stream
    counts as begun); a new seed unless `lock_seed`. Yields the chat view and the seed
    used; nothing where a Stop or Clear came while it waited for the device."""
    session.idle.clear()  # first: a Clear from now on waits for this
    try:
        if session.stop.is_set():
            yield (*_left_alone(), gr.skip())  # and the seed
            return
        if not lock_seed:
            seed = session.arena.rng.randrange(2**31)
        settings = _settings(temperature, top_p, max_new_tokens, seed, repetition_penalty)
        for _ in regenerate(session.arena, context.MODELS, settings, system_prompt, session.stop):
            yield (*_view(session), int(seed))
    finally:
        session.idle.set()


def regenerate_last(system_prompt: str, temperature: float, top_p: float, max_new_tokens: float, seed: float, lock_seed: bool,
                    session: ChatSession, repetition_penalty: float = DEFAULTS.repetition_penalty):
    """The `regenerate` API: stop this session's running reply (the page's; an API `chat`
    of its own holds the device until it ends), wait for it, then answer the last message
    again."""
    stopped_replies(session)
    yield from regenerate_stopped(system_prompt, temperature, top_p, max_new_tokens, seed, lock_seed, session, repetition_penalty)


def stopped_replies(session: ChatSession) -> None:
    """Regenerate's first step: stop the running replies and wait for them; then a Stop or
    Clear pressed before the new reply begins cancels it."""
    session.wait_idle()
    session.stop.clear()


def page_stream(stream):
    """A stream the page runs: counted as unconfirmed until the page's next step
    (`page_has_the_end`) says the stream's last message has arrived."""
    @functools.wraps(stream)
    def streaming(*args, **kwargs):
        session = next(arg for arg in args if isinstance(arg, ChatSession))
        with session.confirmed:
            session.unconfirmed += 1
        yield from stream(*args, **kwargs)
    return streaming


def page_has_the_end(session: ChatSession) -> None:
    with session.confirmed:
        session.unconfirmed = max(0, session.unconfirmed - 1)
        session.confirmed.notify_all()


def stop_chat(session: ChatSession) -> None:
    session.stop.set()


def clear_chat(session: ChatSession) -> tuple:
    """Stop the replies (and drop the queue), wait for their threads, then empty the
    panes; the next message starts a new round."""
    session.pending.clear()
    session.wait_idle()
    clear(session.arena)
    return _view(session, relabel=True)


def set_blind(blind: bool, session: ChatSession) -> tuple:
    session.pending.clear()
    session.wait_idle()
    session.arena.set_blind(blind)
    return _view(session, relabel=True)


def show_results(merged_ref: str, include_flagged: bool) -> tuple[str, str]:
    """The plot and table for the Merged pane's merge config."""
    if not merged_ref.strip():
        return "", "Results appear here once a merged model is in the Merged pane and blind rounds have been voted on."
    res = config_results(VoteStore(context.votes_path()), config_hash(merged_ref.strip()), include_flagged)
    return plot_html(res), table_markdown(res)


def submit_vote(best: str, worst: str, include_flagged: bool, session: ChatSession) -> tuple:
    """Record the vote, reveal the names, and show the results of this merge config. A
    refused vote (no choice, …) changes nothing but the note under the vote row."""
    merged = session.arena.pane("Merged").ref
    try:
        flagged = vote(session.arena, VoteStore(context.votes_path()), best or "", worst or "", config_hash(merged),
                       [session.arena.pane(label).ref for label in PANE_LABELS[1:]])
    except UserError as exc:
        gr.Warning(str(exc))
        return (*[gr.skip()] * (len(_view(session)) + 2), f"⚠️ Vote refused: {exc}")
    note = (f"🚩 Vote kept but flagged ({flagged}): left out of the results by default." if flagged
            else "Vote recorded. Press Clear for the next blind round.")
    return (*_view(session, relabel=True), *show_results(merged, include_flagged), note)


@shown_as_toast
def add_results_to_card(merged_ref: str, include_flagged: bool) -> str:
    """Write the current figures into the merged folder's README.md (its arena section
    replaced, never appended twice)."""
    folder = Path(merged_ref.split("#")[0].strip())
    readme = folder / "README.md"
    if not merged_ref.strip() or not (folder / "mergekit_config.yml").is_file() or not readme.is_file():
        raise UserError("model card", "the Merged pane is not a merge made here", "run a merge, then 'Chat with this merge'")
    check_models(str(folder))
    res = config_results(VoteStore(context.votes_path()), config_hash(str(folder)), include_flagged)
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


def latest_merge(root: Path) -> str:
    """The most recent merge folder under outputs/, or ''."""
    merges = [p.parent for p in root.glob("*/mergekit_config.yml")] if root.is_dir() else []
    return str(max(merges, key=lambda p: p.stat().st_mtime)) if merges else ""


def open_chat(merged_ref: str, session: ChatSession) -> tuple:
    """On page load: the Merged pane gets the latest merge from outputs/, or says what to do."""
    ref = merged_ref.strip() or latest_merge(context.outputs_root())
    if not ref:
        session.arena.pane("Merged").notice = NO_MERGE_HINT
    return ref, *session.arena.statuses(), *show_results(ref, False)


def drop_no_merge_hint(merged_ref: str, session: ChatSession) -> tuple:
    """A model in the Merged field (the first-chat merge, a link, a typed folder) makes
    open_chat's "No merged model yet" line stale."""
    pane = session.arena.pane("Merged")
    if merged_ref.strip() and pane.notice == NO_MERGE_HINT:
        pane.notice = ""
    return session.arena.statuses()


@gpu(CHAT_SECONDS)
@shown_as_toast
def preview_t(attn: str, mlp: str, default: str, merged_ref: str, merged_precision: str, session: ChatSession):
    """Re-merge the Merged pane's model in memory at a new t curve and swap it in.
    Returns (new Merged source, a message with the timings)."""
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
    loaded = load_with_weights(str(folder), weights, merged_precision, name)
    if session.preview is not None:
        context.MODELS.unload(session.preview)
    context.MODELS.add(name, merged_precision, loaded)
    session.preview = loaded
    total = time.perf_counter() - started
    return name, (f"Re-merged in memory in {merged_s:.2f} s, loaded as {loaded.report.precision} in {total - merged_s:.2f} s "
                  f"(swap: {total:.2f} s). Send a message to chat with it.")


@dataclass
class ChatTab:
    """The components app.py links to the Merge tab."""
    merged_ref: gr.Textbox
    parent_a: gr.Textbox
    parent_b: gr.Textbox
    blind: gr.Checkbox


def build_chat_tab(demo: gr.Blocks) -> ChatTab:
    session = gr.State(ChatSession())
    with gr.Row(equal_height=True):
        blind = gr.Checkbox(False, label="Blind mode: shuffled, unnamed panes; vote, then see the names", scale=3)
        system_prompt = gr.Textbox("", label="System prompt", placeholder="optional", scale=4, lines=1, max_lines=3)
    with gr.Accordion("Models: merged folder, parents, precision, panes on/off", open=False):
        with gr.Row():
            merged_ref = gr.Textbox("", label="Merged model (folder)", elem_id="chat-merged",
                                    placeholder=f"run a merge, or type a folder / Hub id / endpoint {ENDPOINT_FORM}")
            chat_a = gr.Textbox(DEFAULT_A, label="Parent A", elem_id="chat-parent-a", placeholder=f"folder, Hub id or {ENDPOINT_FORM}")
            chat_b = gr.Textbox(DEFAULT_B, label="Parent B", elem_id="chat-parent-b", placeholder=f"folder, Hub id or {ENDPOINT_FORM}")
        with gr.Row():
            merged_precision = gr.Dropdown(CHAT_PRECISIONS, value="auto", label="Merged precision (auto: FP8 if native, else int8)")
            parent_precision = gr.Dropdown(CHAT_PRECISIONS, value="bf16", label="Parents' precision")
            switches = [gr.Checkbox(True, label=f"{label} on") for label in PANE_LABELS]
    panes = []
    with gr.Row(elem_id="chat-panes"):
        for label in PANE_LABELS:
            with gr.Column(min_width=300):
                bot = gr.Chatbot(label=label, height=CHAT_HEIGHT, buttons=["copy", "copy_all"],
                                 placeholder="Replies appear here: type below and press Send.")
                stats = gr.Markdown(elem_classes=["pane-stats"])
                panes.append((bot, stats))
    with gr.Row(equal_height=True):
        message = gr.Textbox(label="Message", show_label=False,
                             placeholder="Ask all models at once… (Enter sends; while replies stream, it waits its turn)",
                             scale=6, lines=1, max_lines=4, container=False, elem_id="chat-message")
        send_button = gr.Button("Send", variant="primary", scale=1, min_width=90)
        stop_button = gr.Button("Stop", scale=0, min_width=70)
        regen_button = gr.Button("Regenerate", scale=0, min_width=110)
        lock_seed = gr.Checkbox(False, label="lock seed", scale=0, min_width=110, container=False)
        clear_button = gr.Button("Clear", scale=0, min_width=70, elem_id="chat-clear")
        # One click to deterministic replies (temperature 0 and no penalty: plain greedy).
        greedy_button = gr.Button("Greedy", scale=0, min_width=80, elem_id="chat-greedy")
    pending = gr.Markdown(elem_id="chat-pending")
    with gr.Row(visible=False, equal_height=True) as vote_row:
        best = gr.Radio(["Model 1", "Model 2", "Model 3", TIE, ALL_BAD], value=None, label="Best reply (required)", scale=3,
                        elem_id="vote-best")
        worst = gr.Radio(["Model 1", "Model 2", "Model 3"], value=None, label="Worst reply (optional)", scale=2)
        vote_button = gr.Button("Vote and reveal", variant="primary", scale=1)
    vote_note = gr.Markdown()
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
            seed = gr.Number(DEFAULTS.seed, label="seed (Regenerate draws a new one unless locked)", precision=0)
            defaults_button = gr.Button("Default sampling", size="sm", scale=0, min_width=150)
    with gr.Accordion("Export this comparison (Markdown + JSON)", open=False):
        export_button = gr.Button("Export", size="sm")
        export_files = gr.File(label="Exported files", file_count="multiple", interactive=False, visible=False)
    with gr.Accordion("Instant t-preview: re-merge the merged model in memory at a new t", open=False):
        with gr.Row():
            preview_attn = gr.Textbox("0, 0.5, 1, 0.5, 0", label="t for self_attn")
            preview_mlp = gr.Textbox("0.5", label="t for mlp")
            preview_default = gr.Textbox("0.5", label="t for the rest")
            preview_button = gr.Button("Preview")
        preview_message = gr.Markdown()

    bots, stats_boxes = [p[0] for p in panes], [p[1] for p in panes]
    sampling = [temperature, top_p, max_new_tokens, seed]
    model_inputs = [merged_ref, chat_a, chat_b, *switches, merged_precision, parent_precision, session]
    chat_outputs = [*bots, *stats_boxes, vote_row, best, worst, pending]
    api_chat = gr.Button(visible=False)  # the `chat` API: message first, streamed, as before
    api_chat.click(chat, [message, system_prompt, *sampling, *model_inputs, repetition_penalty], chat_outputs, api_name="chat",
                   concurrency_id="device", concurrency_limit=1)
    # A stream and the step after it run once per trigger ("multiple"): under the default
    # "once", a step still running drops the next trigger, and a dropped `page_has_the_end`
    # would leave a stream counted as unconfirmed (Clear then waits 10 s). Regenerate's
    # wait keeps "once": clicks while it waits are one request, not one blocked worker each.
    each = {"api_visibility": PRIVATE, "trigger_mode": "multiple"}
    for trigger in (send_button.click, message.submit):
        trigger(queue_message, [message, session], [message, pending], concurrency_limit=None, api_visibility=PRIVATE).success(
            page_stream(answer_pending), [system_prompt, *sampling, *model_inputs, repetition_penalty], chat_outputs,
            concurrency_id="device", concurrency_limit=1, **each).then(
            page_has_the_end, session, None, concurrency_limit=None, **each)
    regen_inputs = [system_prompt, *sampling, lock_seed, session, repetition_penalty]
    api_regen = gr.Button(visible=False)  # the `regenerate` API: no page step after it to confirm its end
    api_regen.click(regenerate_last, regen_inputs, [*chat_outputs, seed], api_name="regenerate", concurrency_id="device",
                    concurrency_limit=1)
    regen_button.click(stopped_replies, session, None, concurrency_limit=None, api_visibility=PRIVATE).then(
        page_stream(regenerate_stopped), regen_inputs, [*chat_outputs, seed], concurrency_id="device", concurrency_limit=1,
        **each).then(
        page_has_the_end, session, None, concurrency_limit=None, **each)
    stop_button.click(stop_chat, session, None, concurrency_limit=None, api_visibility=PRIVATE)
    for clearing in (clear_button.click, *[bot.clear for bot in bots]):  # a pane's trash icon clears the arena too
        clearing(clear_chat, session, chat_outputs, concurrency_limit=None, api_visibility=PRIVATE)
    blind.change(set_blind, [blind, session], chat_outputs, concurrency_limit=None, api_visibility=PRIVATE)
    vote_button.click(submit_vote, [best, worst, include_flagged, session], [*chat_outputs, results_plot, results_table, vote_note],
                      api_visibility=PRIVATE)
    for refresh in (refresh_button.click, include_flagged.change):
        refresh(show_results, [merged_ref, include_flagged], [results_plot, results_table], api_visibility=PRIVATE)
    card_button.click(add_results_to_card, [merged_ref, include_flagged], card_message, api_visibility=PRIVATE)
    export_button.click(export_session, session, export_files, api_visibility=PRIVATE)
    preview_button.click(preview_t, [preview_attn, preview_mlp, preview_default, merged_ref, merged_precision, session],
                         [merged_ref, preview_message], api_visibility=PRIVATE, concurrency_id="device", concurrency_limit=1)
    greedy_button.click(lambda: (0, 1.0), None, [temperature, repetition_penalty], api_visibility=PRIVATE)
    defaults_button.click(lambda: (DEFAULTS.temperature, DEFAULTS.top_p, DEFAULTS.repetition_penalty), None,
                          [temperature, top_p, repetition_penalty], api_visibility=PRIVATE)
    demo.load(open_chat, [merged_ref, session], [merged_ref, *stats_boxes, results_plot, results_table], api_visibility=PRIVATE)
    merged_ref.change(drop_no_merge_hint, [merged_ref, session], stats_boxes, api_visibility=PRIVATE, concurrency_limit=None)
    return ChatTab(merged_ref, chat_a, chat_b, blind)
