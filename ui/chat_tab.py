"""The Chat tab: the merged model beside its parents, each through its own chat template;
blind rounds with votes, export, and an instant t-preview of the merge. Layout and
wiring only: the handlers are in ui/chat_actions.py, the chat's lifecycle in
arena/chat_session.py."""

from __future__ import annotations

from dataclasses import dataclass, fields

import gradio as gr

from arena.chat_session import DEFAULTS, ChatRequest, ChatSession, caution_note
from arena.votes import ALL_BAD, PANE_LABELS, TIE
from core.sources import ENDPOINT_FORM
from evaluation import defaults
from evaluation.prompt_set import CHAT_EXAMPLES, read_prompts
from ui import chat_actions as act
from ui.chat_results import add_results_to_card, show_results
from ui.context import PRIVATE, chat_queue
from ui.t_preview import preview_curves, preview_t

CHAT_PRECISIONS = ["auto", "fp8", "int8", "bf16"]
CHAT_HEIGHT = 330  # px: three panes, the message box and Send fit a 1400x900 screen
# Sent, the box empties in the page at once, as Send reads it: a server's "" arriving after
# the visitor had typed the next message wiped it (seen in Chromium on a busy host: the next
# Send sent ""). The step's own values go on to the server unchanged.
CLEAR_BOX = """(...values) => {
  const box = document.querySelector('#chat-message textarea');
  box.value = '';
  box.dispatchEvent(new Event('input', {bubbles: true}));
  return values.slice(0, %d);
}"""


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

    def stream_outputs(self) -> list:  # what a stream step writes (ChatView.streamed)
        return [*self.bots, *self.stats, self.note, self.seed]

    def outputs(self) -> list:
        return [*self.bots, *self.stats, self.vote_row, self.best, self.worst, self.note, self.send, self.regenerate, self.clear,
                self.blind, self.seed]


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
    inputs, outputs, streamed = controls.inputs(), controls.outputs(), controls.stream_outputs()
    n = len(inputs)

    request = lambda values: ChatRequest(*values[:n])  # noqa: E731 -- the page's inputs, in ChatRequest's order

    def with_box(box, shown):  # a handler's (box, view): None leaves the box as it is
        return gr.skip() if box is None else box, *shown.updates()

    def on_send(message_text, *values):
        # The page empties the box itself as the message leaves (CLEAR_BOX); a refused one is put back.
        box, shown = act.take_message(message_text, request(values), values[n])
        return gr.skip() if box == "" else message_text, *(shown or act.UNCHANGED).updates()

    def on_stream(*values):
        yield from (v.streamed() for v in act.stream(request(values), values[n]))

    # The stream step queues (ui.context.chat_queue); Stop cancels it (and the stream step it
    # may be waiting behind); the step after it turns the buttons on once the page has the end.
    streams = []
    for trigger in (send_button.click, message.submit):
        # "multiple", on each step: every Send and Enter is taken and answered, also while an earlier one's
        # steps are pending (Gradio's default, "once", drops the new one without a word).
        taken = trigger(on_send, [message, *inputs, session], [message, *outputs], api_visibility=PRIVATE, concurrency_limit=None,
                        trigger_mode="multiple", js=CLEAR_BOX % (len(inputs) + 2))
        streams.append(taken.then(on_stream, [*inputs, session], streamed, api_visibility=PRIVATE, trigger_mode="multiple",
                                  **chat_queue()))
    taken = regen_button.click(lambda *values: act.take_regenerate(request(values), values[n]).updates(), [*inputs, session],
                               outputs, api_visibility=PRIVATE, concurrency_limit=None)
    streams.append(taken.then(on_stream, [*inputs, session], streamed, api_visibility=PRIVATE, **chat_queue()))
    for event in streams:
        # No progress dots: the replies are complete, and dots under them read as another reply coming.
        event.then(lambda typed, state: with_box(*act.stream_done(typed, state)), [message, session], [message, *outputs],
                   api_visibility=PRIVATE, concurrency_limit=None, show_progress="hidden", trigger_mode="multiple")
    stop_button.click(lambda typed, state: with_box(*act.stop_replies(typed, state)), [message, session], [message, *outputs],
                      cancels=streams, api_visibility=PRIVATE, concurrency_limit=None)
    for clearing in (clear_button.click, *[bot.clear for bot in bots]):  # a pane's trash icon clears the arena too
        clearing(lambda state: act.clear_chat(state).updates(), session, outputs, cancels=streams, api_visibility=PRIVATE,
                 concurrency_limit=None)
    blind.input(lambda on, lock, t, state: act.set_blind(on, state, lock, t).updates(), [blind, lock_seed, temperature, session],
                outputs, cancels=streams, api_visibility=PRIVATE, concurrency_limit=None)
    gr.on([lock_seed.input, temperature.release], lambda on, lock, t: caution_note(on, lock, t) if on else gr.skip(),
          [blind, lock_seed, temperature], note, api_visibility=PRIVATE, queue=False, show_progress="hidden")

    def on_vote(best_choice, worst_choice, flagged, state):
        shown, plot, table = act.submit_vote(best_choice, worst_choice, flagged, state)
        return *shown.updates(), plot, table

    vote_button.click(on_vote, [best, worst, include_flagged, session], [*outputs, results_plot, results_table], api_visibility=PRIVATE)

    # The API: `chat` and `regenerate`, hidden buttons whose parameters are unchanged.
    api_chat = gr.Button(visible=False)
    api_chat.click(act.chat, [message, *inputs[:5], merged_ref, chat_a, chat_b, *switches, merged_precision, parent_precision,
                              session, repetition_penalty], streamed, api_name="chat", **chat_queue())
    api_regen = gr.Button(visible=False)
    api_regen.click(act.regenerate_last, [system_prompt, temperature, top_p, max_new_tokens, seed, lock_seed, session,
                                          repetition_penalty], streamed, api_name="regenerate", **chat_queue())

    for refresh in (refresh_button.click, include_flagged.change):
        refresh(show_results, [merged_ref, include_flagged], [results_plot, results_table], api_visibility=PRIVATE)
    card_button.click(add_results_to_card, [merged_ref, include_flagged], card_message, api_visibility=PRIVATE)
    export_button.click(act.export_session, session, export_files, api_visibility=PRIVATE)
    merged_ref.change(preview_curves, merged_ref, [preview_attn, preview_mlp, preview_default], api_visibility=PRIVATE,
                      queue=False)
    preview_button.click(preview_t, [preview_attn, preview_mlp, preview_default, merged_ref, merged_precision, session],
                         [merged_ref, preview_message], api_visibility=PRIVATE, concurrency_id="device", concurrency_limit=1)
    greedy_button.click(lambda: (0, 1.0), None, [temperature, repetition_penalty], api_visibility=PRIVATE)
    defaults_button.click(lambda: (DEFAULTS.temperature, DEFAULTS.top_p, DEFAULTS.repetition_penalty), None,
                          [temperature, top_p, repetition_penalty], api_visibility=PRIVATE)
    demo.load(act.open_chat, [merged_ref, own_merge, session], [merged_ref, *stats, results_plot, results_table], api_visibility=PRIVATE)
    merged_ref.change(act.drop_no_merge_hint, [merged_ref, session], stats, api_visibility=PRIVATE, concurrency_limit=None)
    return ChatTab(merged_ref, chat_a, chat_b, blind, session)
