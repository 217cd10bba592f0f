"""The Chat tab: the merged model beside its parents, each through its own chat template;
blind rounds with votes, export, and an instant t-preview of the merge."""

from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from core.errors import UserError
from inference import GenerationSettings
from inference.loading import load_with_weights
from merging.form import config_from_form, form_from_yaml
from merging.merge import merge_in_memory
from ui import context
from ui.arena import PANE_LABELS, ArenaSession, clear, export_json, export_markdown, regenerate, send, vote
from ui.context import DEFAULT_A, DEFAULT_B, PRIVATE, check_models, shown_as_toast
from ui.votes import VoteStore, config_hash

CHAT_PRECISIONS = ["auto", "fp8", "int8", "bf16"]
PREVIEW_MAX_BYTES = 2 * 10**9  # in-memory t-previews: small models only


class ChatSession:
    """Per visitor (gr.State): their panes, their t-preview model, and the event their
    Stop sets. A plain class: Gradio serializes dataclass states, and Events don't."""

    def __init__(self) -> None:
        self.arena = ArenaSession()
        self.preview = None  # this visitor's in-memory t-preview model, freed when replaced
        self.stop = threading.Event()

    def __deepcopy__(self, memo: dict) -> ChatSession:  # gr.State copies its default per session
        return ChatSession()


def _settings(temperature: float, top_p: float, max_new_tokens: float, seed: float) -> GenerationSettings:
    return GenerationSettings(temperature=float(temperature), top_p=float(top_p), max_new_tokens=int(max_new_tokens), seed=int(seed))


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
            session.arena.pane(label).status = problem


def _view(session: ChatSession, relabel: bool = False) -> tuple:
    """Three chat histories, three stats lines, the vote row. Pane titles change only
    when blind mode shuffles or reveals (`relabel`); chat updates stay plain values, so
    API clients get plain histories."""
    arena = session.arena
    bots = ([gr.Chatbot(value=p.history, label=label) for p, label in zip(arena.panes, arena.display_labels(), strict=True)]
            if relabel else [p.history for p in arena.panes])
    voting = arena.blind and not arena.revealed and arena.replies_in()
    return (*bots, *[p.status for p in arena.panes], gr.Row(visible=voting))


@shown_as_toast
def chat(message: str, system_prompt: str, temperature: float, top_p: float, max_new_tokens: float, seed: float,
         merged_ref: str, parent_a_ref: str, parent_b_ref: str, merged_on: bool, parent_a_on: bool, parent_b_on: bool,
         merged_precision: str, parent_precision: str, session: ChatSession):
    """Send one message to every switched-on pane; yields (3 chats, 3 stats, vote row)."""
    _configure(session, [merged_ref, parent_a_ref, parent_b_ref], merged_precision, parent_precision, [merged_on, parent_a_on, parent_b_on])
    session.stop.clear()
    for _ in send(session.arena, context.MODELS, message, _settings(temperature, top_p, max_new_tokens, seed), system_prompt,
                  session.stop):
        yield _view(session)


@shown_as_toast
def regenerate_last(system_prompt: str, temperature: float, top_p: float, max_new_tokens: float, seed: float, session: ChatSession):
    session.stop.clear()
    for _ in regenerate(session.arena, context.MODELS, _settings(temperature, top_p, max_new_tokens, seed), system_prompt,
                        session.stop):
        yield _view(session)


def stop_chat(session: ChatSession) -> None:
    session.stop.set()


def clear_chat(session: ChatSession) -> tuple:
    clear(session.arena)
    return _view(session, relabel=True)


def set_blind(blind: bool, session: ChatSession) -> tuple:
    session.arena.set_blind(blind)
    return _view(session, relabel=True)


@shown_as_toast
def submit_vote(best: str, worst: str, temperature: float, top_p: float, max_new_tokens: float, seed: float,
                session: ChatSession) -> tuple:
    """Record the vote, reveal the names, and show the scoreboard of this merge config."""
    digest = config_hash(session.arena.pane("Merged").ref)
    vote(session.arena, VoteStore(context.votes_path()), best or "", worst or "", _settings(temperature, top_p, max_new_tokens, seed),
         digest)
    return (*_view(session, relabel=True), scoreboard_markdown(digest))


def scoreboard_markdown(digest: str) -> str:
    scores = VoteStore(context.votes_path()).scoreboard(digest)
    if not scores:
        return "No votes for this merge yet."
    rows = "\n".join(f"| {s.model} | {s.best} | {s.worst} | {s.net:+d} |" for s in scores)
    header = "| model | best | worst | net |\n|---|---|---|---|"
    return f"**Scoreboard for merge config `{digest}`** (ties: {scores[0].ties})\n\n{header}\n{rows}"


def export_session(temperature: float, top_p: float, max_new_tokens: float, seed: float, session: ChatSession) -> list[str]:
    """The conversation of every pane, settings and votes, as Markdown and JSON files."""
    settings = _settings(temperature, top_p, max_new_tokens, seed)
    folder = Path(tempfile.mkdtemp(prefix="slerp-arena-export-"))
    (folder / "comparison.md").write_text(export_markdown(session.arena, settings))
    (folder / "comparison.json").write_text(export_json(session.arena, settings))
    return [str(folder / "comparison.md"), str(folder / "comparison.json")]


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


def build_chat_tab() -> ChatTab:
    session = gr.State(ChatSession())
    with gr.Row():
        merged_ref = gr.Textbox("", label="Merged model (folder)", placeholder="run a merge, or type a folder / Hub id")
        chat_a = gr.Textbox(DEFAULT_A, label="Parent A")
        chat_b = gr.Textbox(DEFAULT_B, label="Parent B")
    with gr.Row():
        merged_precision = gr.Dropdown(CHAT_PRECISIONS, value="auto", label="Merged precision (auto: FP8 if native, else int8)")
        parent_precision = gr.Dropdown(CHAT_PRECISIONS, value="bf16", label="Parents' precision")
    with gr.Row():
        system_prompt = gr.Textbox("", label="System prompt", placeholder="optional", scale=4)
        blind = gr.Checkbox(False, label="Blind mode: shuffle the panes, vote, then see the names", scale=2)
    panes = []
    with gr.Row():
        for label in PANE_LABELS:
            with gr.Column():
                on = gr.Checkbox(True, label=f"{label} on")
                bot = gr.Chatbot(label=label, height=380)
                stats = gr.Markdown()
                panes.append((on, bot, stats))
    message = gr.Textbox(label="Message", placeholder="Ask all models at once…")
    with gr.Row():
        send_button = gr.Button("Send", variant="primary")
        stop_button = gr.Button("Stop")
        regen_button = gr.Button("Regenerate")
        clear_button = gr.Button("Clear")
    with gr.Accordion("Instant t-preview: re-merge the Merged pane in memory at a new t", open=False):
        with gr.Row():
            preview_attn = gr.Textbox("0, 0.5, 1, 0.5, 0", label="t for self_attn")
            preview_mlp = gr.Textbox("0.5", label="t for mlp")
            preview_default = gr.Textbox("0.5", label="t for the rest")
            preview_button = gr.Button("Preview")
        preview_message = gr.Markdown()
    with gr.Row(visible=False) as vote_row:
        best = gr.Radio(["Model 1", "Model 2", "Model 3", "tie"], label="Best reply")
        worst = gr.Radio(["Model 1", "Model 2", "Model 3"], label="Worst reply (optional)")
        vote_button = gr.Button("Vote and reveal")
    scoreboard = gr.Markdown()
    with gr.Row():
        export_button = gr.Button("Export this comparison (Markdown + JSON)")
        export_files = gr.File(label="Exported", file_count="multiple")
    with gr.Accordion("Sampling (shared by all panes)", open=False):
        temperature = gr.Slider(0, 2, 0.7, step=0.05, label="temperature (0 = greedy)")
        top_p = gr.Slider(0.05, 1, 1.0, step=0.05, label="top_p")
        max_new_tokens = gr.Slider(1, 1024, 256, step=1, label="max new tokens")
        seed = gr.Number(0, label="seed", precision=0)

    bots, stats_boxes = [p[1] for p in panes], [p[2] for p in panes]
    sampling = [temperature, top_p, max_new_tokens, seed]
    chat_inputs = [message, system_prompt, *sampling, merged_ref, chat_a, chat_b, *[p[0] for p in panes],
                   merged_precision, parent_precision, session]
    chat_outputs = [*bots, *stats_boxes, vote_row]
    send_event = send_button.click(chat, chat_inputs, chat_outputs, api_name="chat", concurrency_id="device", concurrency_limit=1)
    submit_event = message.submit(chat, chat_inputs, chat_outputs, api_visibility=PRIVATE, concurrency_id="device", concurrency_limit=1)
    for event in (send_event, submit_event):
        event.then(lambda: "", None, message, api_visibility=PRIVATE)
    regen_button.click(regenerate_last, [system_prompt, *sampling, session], chat_outputs, api_name="regenerate",
                       concurrency_id="device", concurrency_limit=1)
    stop_button.click(stop_chat, session, None, concurrency_limit=None, api_visibility=PRIVATE)
    clear_button.click(clear_chat, session, chat_outputs, api_visibility=PRIVATE)
    blind.change(set_blind, [blind, session], chat_outputs, api_visibility=PRIVATE)
    vote_button.click(submit_vote, [best, worst, *sampling, session], [*chat_outputs, scoreboard], api_visibility=PRIVATE)
    export_button.click(export_session, [*sampling, session], export_files, api_visibility=PRIVATE)
    preview_button.click(preview_t, [preview_attn, preview_mlp, preview_default, merged_ref, merged_precision, session],
                         [merged_ref, preview_message], api_visibility=PRIVATE, concurrency_id="device", concurrency_limit=1)
    return ChatTab(merged_ref, chat_a, chat_b)
