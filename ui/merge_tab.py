"""The Merge tab: pick two parents, shape t per layer (form <-> YAML), plan, merge with
progress and cancel, look at θ, sweep t, push to the Hub."""

from __future__ import annotations

import dataclasses
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import gradio as gr
import pandas as pd
import psutil

from core import places
from core.downloads import Progress as Download
from core.downloads import watching
from core.errors import UserError
from core.hub_access import SIGN_IN, SIGN_IN_FIX, as_visitor
from core.policy import access_policy, check_models
from core.sources import is_converted, kind_of, resolve_model
from evaluation import defaults
from evaluation.defaults import known_models
from evaluation.demo_build import DemoBuild
from merging import Progress, parse_config, run_merge
from merging.analyze import angles_of_merge, divergence, divergence_grid
from merging.checkpoint import download_note, open_checkpoint
from merging.config import DTYPES, MergeConfig
from merging.dry_run import dry_run
from merging.feed import DEFAULT_MAX_RAM, parse_max_ram
from merging.form import (
    CUSTOM,
    INVALID_YAML,
    PRESETS,
    MergeForm,
    config_from_form,
    form_from_yaml,
    preset_of,
    t_curves,
)
from merging.hub import HubOffline, push_folder
from merging.inspect import compatibility_problems, inspect_model
from merging.merge import MergeCancelled
from ui.context import PRIVATE, Visitor, in_visitor_words, short_name
from ui.context import CancelSession as MergeSession  # the name the merge's handler and tests use
from ui.context import cancel as cancel_merge
from ui.demo_panel import cancel_build, demo_row, fresh_defaults, show_build, start_build
from ui.merge_form import FormControls, FormRequest
from ui.sweep_panel import build_sweep_panel

FALLBACK_LAYERS = 24  # for the t plot while a parent's layer count is unknown
T_TITLE = "t (0 = parent A, 1 = parent B)"  # the t plot's y axis
MAX_RAM_FIELD = "Max RAM"  # the budget's box, as its errors name it


def describe_parents(a: str, b: str, session: MergeSession | None = None) -> tuple[str, int]:
    """The parents panel, and the base's layer count for the t plot (0 when unknown). A Hub
    parent's config is read with the signed-in visitor's token, if any."""
    with as_visitor(session.visitor.token if session else None):
        return _describe_parents(a, b)


def _describe_parents(a: str, b: str) -> tuple[str, int]:
    lines, infos = [], []
    for label, ref in (("Parent A (base)", a), ("Parent B", b)):
        if not ref:
            lines.append(f"{label}: not chosen")
            continue
        try:
            check_models(ref)
            info = inspect_model(ref)
            infos.append(info)
            lines.append(f"{label}: {info.describe()}")
        except UserError as exc:
            lines.append(f"{label}: ⚠️ {exc}")
    if len(infos) == 2:
        problems = compatibility_problems(*infos)
        lines += [f"⚠️ {p}" for p in problems] or ["✅ compatible"]
    # A parent that cannot be read leaves the other's count: SLERP parents have the same layers (a mismatch is said above).
    base_layers = infos[0].num_layers if infos else 0
    return "\n\n".join(lines), base_layers


def apply_preset(name: str):
    return PRESETS[name] if name in PRESETS else (gr.skip(), gr.skip(), gr.skip())  # "custom" keeps the fields


class ShownConfig(NamedTuple):
    """What the form shows for its fields (the outputs of every field's edit)."""
    yaml_text: str
    plot: gr.LinePlot
    message: str
    preset: str
    plan: str


def form_to_yaml(form: MergeForm, base_layers: int = 0, shown: str = "") -> ShownConfig:
    """Form -> the YAML, t plot, message, preset and plan box. While a field is invalid the
    YAML box says so (a comment) and the plot is empty: nothing stale stays on screen. Any
    edit clears the last plan, which described another config. A YAML already `shown` that
    says what the form says stays as it is (a pasted config keeps its own layout and keys)."""
    try:
        config = config_from_form(form)
    except UserError as exc:
        return ShownConfig(f"{INVALID_YAML}{exc}\n", t_plot(None, base_layers), f"⚠️ {exc}", preset_of(form), "")
    try:
        text = shown if shown and FormRequest(shown, form).config() else config.to_yaml()
    except UserError:
        text = config.to_yaml()
    return ShownConfig(text, t_plot(config, base_layers), "", preset_of(form), "")


class FilledForm(NamedTuple):
    """The form as pasted YAML fills it: MergeForm's eight fields, then as ShownConfig."""
    base_model: object
    other_model: object
    self_attn: object
    mlp: object
    default: object
    layer_start: object
    layer_end: object
    dtype: object
    plot: gr.LinePlot
    message: str
    preset: object
    plan: str


def yaml_to_form(text: str, base_layers: int = 0) -> FilledForm:
    """Pasted YAML -> every form field, the plot, a message, the preset and the plan box.
    Invalid YAML leaves the text and the fields as they are, empties the plot and names the problem."""
    try:
        form = form_from_yaml(text)
        config = parse_config(text)
    except UserError as exc:
        return FilledForm(*[gr.skip()] * 8, t_plot(None, base_layers), f"⚠️ {exc}", gr.skip(), "")
    return FilledForm(*dataclasses.astuple(form), t_plot(config, base_layers), "", preset_of(form), "")


def curve_frame(config: MergeConfig | None, base_layers: int = 0) -> pd.DataFrame:
    """t per layer, one row per (filter, layer); `layer` is the base model's real index, so
    a layer_range sub-slice shows only its layers. Empty for no (valid) config."""
    if config is None:
        return pd.DataFrame({"layer": pd.Series(dtype=int), "t": pd.Series(dtype=float), "filter": pd.Series(dtype=str)})
    first, end = config.slices[0].base.layer_range if config.slices and config.slices[0].base.layer_range else (0, 0)
    count = end - first if end else (base_layers or FALLBACK_LAYERS)
    return pd.DataFrame([{"layer": first + i, "t": t, "filter": label}
                         for label, curve in t_curves(config, count).items() for i, t in enumerate(curve)])


def t_plot(config: MergeConfig | None, base_layers: int = 0) -> gr.LinePlot:
    """The t plot: a line per filter with a legend, the base's layers on x, the parents named on y."""
    frame = curve_frame(config, base_layers)
    last = max(base_layers, int(frame["layer"].max()) + 1 if len(frame) else 0, 1) - 1
    if config is None:  # an empty value, not an empty frame: Gradio keeps the old lines for the latter
        return gr.LinePlot(value=None, y_title="t", x_lim=[0, max(last, 1)], caption="no valid config: fix the field named below")
    a, b = short_name(config.base_model), short_name(config.other_model)
    return gr.LinePlot(value=frame, y_title=T_TITLE, x_lim=[0, max(last, 1)],
                       caption=f"t = 0: {a} (parent A, base) · t = 1: {b} (parent B)")


# The results panel (result, model card, output folder, θ map) is a small state machine:
# idle -> running -> done | failed | cancelled. Every state but done empties the last result.
IDLE = "*No merge yet: check the YAML, then press **Merge**.*"
RUNNING = "⏳ **Merging…** progress is shown here; **Cancel** stops it and writes nothing."
CANCELLED = "### ⏹ Cancelled — nothing was written"


FAILED = "### ❌ Merge failed"


def failed(exc: UserError) -> tuple[str, str, str, str]:
    return f"{FAILED}\n{in_visitor_words(str(exc))}", "", "", ""


def after_edit(result: str) -> tuple[str, str]:
    """An input of the merge was edited: the plan (made for the old values) goes, and so
    does a failure, which named a value that may be fixed now (a visitor who fixed the
    Max RAM box still read "Merge failed: Max RAM: 'lots'…", seen in Chromium). A finished
    merge stays: its folder and card are still true."""
    return "", IDLE if result.startswith(FAILED) else result


class StartedMerge(NamedTuple):
    """The results panel at a Merge click, and the YAML approved to run ("" when refused)."""
    result: str
    card: str
    output_path: str
    heatmap: str
    approved: str


def start_merge(request: FormRequest) -> StartedMerge:
    """First step of a Merge click: the running state (previous result cleared), and the
    YAML approved to run; or the failed state and "" when the form refuses."""
    try:
        request.config()
    except UserError as exc:
        return StartedMerge(*failed(exc), "")
    return StartedMerge(RUNNING, "", "", "", request.yaml_text)


def merge(yaml_text: str, output_name: str, overwrite: bool, session: MergeSession, approved: str | None = None,
          max_ram: str = "", progress=gr.Progress()):  # noqa: B008 -- Gradio injects it
    """Run the merge in the YAML. Returns the panel: (result, model card, output path, θ
    heatmap). In the page `approved` is what start_merge let through (the API has none);
    `max_ram` is the Max RAM box ("" = the default). Errors and Cancel end in the panel,
    not as an exception."""
    if approved == "":
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()  # start_merge refused; its message is in the panel
    if approved is not None and approved != yaml_text:
        return failed(UserError("form", "the YAML changed while the merge was starting", "press Merge again"))
    session.cancel.clear()
    typed = (output_name or "").strip()
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", typed).strip(".-")

    def on_progress(p: Progress) -> None:  # Hub parents: their download and the merge, which follows it, on one line
        progress(p.fraction, desc=f"Cancelling… · {p.line()}" if session.cancel.is_set() else p.line())

    def on_download(p: Download) -> None:  # a Hub parent not in the cache yet
        stage = "Cancelling…" if session.cancel.is_set() else f"Downloading {p.repo}"
        progress(p.done / p.total if p.total else None, desc=f"{stage} · {p.line()}")

    try:
        if not name:
            raise UserError("output name", "empty", "type a name for the merged model")
        budget = parse_max_ram(max_ram, MAX_RAM_FIELD)
        config = parse_config(yaml_text)
        with as_visitor(session.visitor.token), watching("the parents", on_download, session.cancel):
            result = run_merge(config, places.outputs_root() / name, overwrite=overwrite, on_progress=on_progress,
                               cancel=session.cancel, policy=access_policy(),
                               exists_fix="choose another output name, or tick “overwrite”", max_ram=budget)
    except MergeCancelled:
        return CANCELLED, "", "", ""
    except UserError as exc:
        return (CANCELLED, "", "", "") if session.cancel.is_set() else failed(exc)  # a Cancel while a parent downloaded
    renamed = [f"- ℹ️ saved as `{places.outputs_root().name}/{name}`: a name keeps only letters, digits, `.`, `_` and `-`"
               ] if name != typed else []
    summary = in_visitor_words("\n".join([f"### ✅ Merged into `{result.output_dir}`", f"- {result.summary()}", *renamed,
                         *[f"- ⚠️ {w}" for w in result.warnings], *[f"- {n}" for n in budget_notes(max_ram, budget)]]))
    heatmap = heatmap_html(*divergence_grid(angles_of_merge(result.tensors)), title="θ between the parents in this merge (degrees)")
    return summary, card_page((result.output_dir / "README.md").read_text()), str(result.output_dir), heatmap


def card_page(card: str) -> str:
    """The model card as a page: its Hub front matter (`---` YAML `---`), which Markdown
    would render as a rule and a run-on paragraph, shown as a YAML block instead."""
    if card.startswith("---\n") and (end := card.find("\n---\n", 4)) != -1:
        return f"```yaml\n{card[4:end]}\n```\n{card[end + 5:]}"
    return card


def plan(request: FormRequest, max_ram: str = "") -> str:
    """Dry run of the YAML shown under the Max RAM budget: sizes, peak RAM, time estimate
    and warnings, nothing written."""
    try:
        config = request.config()
        budget = parse_max_ram(max_ram, MAX_RAM_FIELD)
        check_models(*config.models)
        summary = dry_run(config, budget, places.outputs_root(), access_policy())
        return "\n".join(["```", summary.describe(), "```", *budget_notes(max_ram, budget)])
    except UserError as exc:
        return f"⚠️ {exc}"


def budget_notes(typed: str, budget: int) -> list[str]:
    """What the Max RAM box's value means when it is not what was asked: empty is the
    default, and more than the machine has is only an upper bound."""
    notes = [f"ℹ️ {MAX_RAM_FIELD} was empty: the default, {budget // 10**6} MB."] if not (typed or "").strip() else []
    total = psutil.virtual_memory().total
    if budget > total:
        notes.append(f"ℹ️ {MAX_RAM_FIELD}: {budget / 1e9:,.0f} GB is more than this machine's {total / 1e9:.0f} GB; "
                     "the merge takes only what it needs (the estimated peak above).")
    return notes


def divergence_map(request: FormRequest, progress=gr.Progress()) -> str:  # noqa: B008 -- Gradio injects it
    """Heatmap of the angle between the parents of the YAML shown, per layer and component."""
    try:
        config = request.config()
        first, second = config.base_model, config.other_model
        check_models(first, second)
        note = download_note([first, second], "The divergence map")
        if note is not None:
            progress(0, desc=note)  # before the download starts, and while it runs

        def on_download(p: Download) -> None:
            progress(p.done / p.total if p.total else None, desc=f"{note} · {p.line()}")

        with watching("the parents", on_download):
            parents = [open_checkpoint(ref, resolve_model(ref)) for ref in (first, second)]
        angles = divergence(*parents, on_progress=lambda done, total: progress(done / total, desc=f"{done}/{total} tensors"))
    except UserError as exc:
        return f"⚠️ {exc}"
    return heatmap_html(*divergence_grid(angles), title=f"θ between {short_name(first)} and {short_name(second)} (degrees)")


def heatmap_html(columns: list[str], rows: list[tuple[str, list[float | None]]], title: str) -> str:
    """A table of θ in degrees, shaded from white (this map's smallest θ) to deep red (its
    largest), so a map whose angles all sit near 1° still shows where the parents differ most."""
    values = [v for _, cells in rows for v in cells if v is not None]
    low, high = (min(values), max(values)) if values else (0.0, 0.0)

    def cell(theta: float | None) -> str:
        if theta is None:
            return "<td></td>"
        strength = (theta - low) / (high - low) if high > low else 0.0
        shade = round(255 * (1 - 0.8 * strength))
        return f'<td style="background:rgb(255,{shade},{shade});color:#000;text-align:right;padding:2px 6px">{theta:.2f}</td>'

    head = "".join(f"<th style='padding:2px 6px'>{c}</th>" for c in columns)
    body = "".join(f"<tr><th style='text-align:left;padding:2px 6px'>{name}</th>{''.join(cell(v) for v in cells)}</tr>"
                   for name, cells in rows)
    note = (f"Colours span this map's own range, {low:.2f}° (white) to {high:.2f}° (red). Fine-tuned siblings usually "
            "differ by well under 5°, and t still changes the merge there: SLERP moves along the arc between the two "
            "weight vectors, so the merged tensor goes from one parent to the other as t goes from 0 to 1, whatever θ is. "
            "Large θ (tens of degrees) means unrelated weights; SLERP then keeps the norm a plain average would lose.")
    return (f"<div style='max-height:420px;overflow:auto'><b>{title}</b><p style='font-size:12px;margin:4px 0'>{note}</p>"
            f"<table style='border-collapse:collapse;font-size:12px'><tr><th></th>{head}</tr>{body}</table></div>")


def push_to_hub(output_path: str, repo_id: str, token: str, visitor: Visitor = Visitor()) -> tuple[str, str | None]:  # noqa: B008 -- frozen
    """(message, zip to download or None). Offline, the merged folder is offered as a zip.
    A signed-in visitor pushes with their own token, and a bare or empty name goes to their
    namespace; with sign-in on, nobody pushes with the Space owner's token."""
    if not output_path:
        return "⚠️ push: nothing merged yet — run a merge first", None
    pasted = token.strip()
    token = pasted or visitor.token or ""
    if SIGN_IN and not token:
        return f"⚠️ push: not signed in — {SIGN_IN_FIX}, or paste a write token", None
    repo_id = repo_id.strip() or Path(output_path).name
    if visitor.username and not pasted and "/" not in repo_id:  # a pasted token may be another account's
        repo_id = f"{visitor.username}/{repo_id}"
    try:
        return f"✅ pushed to {push_folder(Path(output_path), repo_id, token)}", None
    except HubOffline as exc:
        archive = shutil.make_archive(str(Path(tempfile.mkdtemp(prefix="slerp-arena-zip-")) / Path(output_path).name), "zip",
                                      output_path)
        return (f"⚠️ {exc.field}: {exc.problem} — download the zip below, unzip it on a machine that is online and run "
                f"`hf upload {repo_id.strip() or 'user/name'} FOLDER`"), archive
    except UserError as exc:
        return f"⚠️ {exc}", None


@dataclass
class MergeTab:
    """The components app.py links to the Chat tab."""
    parent_a: gr.Dropdown
    parent_b: gr.Dropdown
    output_path: gr.Textbox
    to_chat: gr.Button
    session: gr.State


def restored_merge(stored: str) -> tuple:
    """On page load: this browser's latest merge (its storage kept it across the reload
    that signing in makes) back in the results panel: (result, output folder)."""
    if not (own := defaults.own_merge(stored)):
        return gr.skip(), gr.skip()
    return f"Your latest merge: `{Path(own).name}` (press **Chat with this merge**, or merge again).", own


def build_merge_tab(demo: gr.Blocks, own: gr.BrowserState) -> MergeTab:
    session = gr.State(MergeSession())
    base_layers = gr.State(0)
    approved = gr.State(None)  # the YAML start_merge let through ("" when it refused)
    build = DemoBuild()  # the app's one build of the demo parent, every page watching it
    # Initial values are computed here (file checks, no model I/O), so the first page shows
    # a filled form, YAML and plot at once, even while the bundled model is being converted.
    pair = defaults.start_pair()
    first = pair.form()
    # Not form_to_yaml: it also builds a gr.LinePlot, and one built here, inside the Blocks,
    # is rendered (a stray caption box at the top of the tab).
    initial_yaml = pair.yaml()
    converting = any(kind_of(ref) in ("bundled", "gguf") and not is_converted(ref) for ref in (first.base_model, first.other_model))
    demo_parent = demo_row(pair)
    with gr.Row():
        parent_a = gr.Dropdown(known_models(), value=first.base_model, label="Parent A (base_model, t = 0)", allow_custom_value=True)
        parent_b = gr.Dropdown(known_models(), value=first.other_model, label="Parent B (t = 1)", allow_custom_value=True)
    parents_info = gr.Markdown(
        "⏳ **Preparing the bundled SmolLM2** (GGUF → safetensors, first start on this machine only, about 30 s). "
        "The form below works meanwhile." if converting else "⏳ Reading the parents…")
    with gr.Row():
        with gr.Column(scale=3):
            preset = gr.Radio([*PRESETS, CUSTOM], value=pair.preset, label="Preset (follows the fields and pasted YAML)")
            attn = gr.Textbox(first.self_attn, label="t gradient for self_attn")
            mlp = gr.Textbox(first.mlp, label="t gradient for mlp")
            default = gr.Textbox(first.default, label="t gradient for everything else")
            with gr.Row():
                # No precision or minimum: Gradio would round 2.5 to 2 unseen, and its range check is a
                # bare "Error" toast; config_from_form refuses such a value in one line instead.
                layer_start = gr.Number(0, label="first layer")
                layer_end = gr.Number(0, label="end layer (0 = all)")
                dtype = gr.Dropdown(list(DTYPES), value="bfloat16", label="dtype")
            with gr.Row():
                output_name = gr.Textbox("my-merge", label="Output name (under outputs/)", scale=3)
                max_ram = gr.Textbox(f"{DEFAULT_MAX_RAM // 10**6}MB", label=MAX_RAM_FIELD, scale=1,
                                     info="the merge's RAM; more reads large tensors once")
                overwrite = gr.Checkbox(False, label="overwrite", scale=1)
        with gr.Column(scale=2):
            # Empty until the parents' layer count is read: a first frame drawn with a guessed
            # count stayed on screen when the load replaced it (seen in Chromium: 24 of 30 layers).
            plot = gr.LinePlot(None, x="layer", y="t", color="filter", color_title="filter", y_lim=[0, 1],
                               x_title="layer", y_title=T_TITLE, caption="reading the parents' layer counts…",
                               label="t per layer")
    form_message = gr.Markdown()
    yaml_box = gr.Code(initial_yaml, language="yaml", label="mergekit YAML (edit or paste: the form follows)", lines=14)
    with gr.Row():
        run = gr.Button("Merge", variant="primary")
        cancel = gr.Button("Cancel")
        plan_button = gr.Button("Plan (dry run)")
        divergence_button = gr.Button("Divergence map")
    plan_box = gr.Markdown()
    result = gr.Markdown(IDLE)
    heatmap = gr.HTML()
    output_path = gr.Textbox(label="Output folder", interactive=False)
    to_chat = gr.Button("Chat with this merge")
    controls = FormControls(yaml_box, parent_a, parent_b, attn, mlp, default, layer_start, layer_end, dtype)
    form_inputs = controls.fields()
    build_sweep_panel(controls, session)
    with gr.Accordion("Model card", open=False):
        card = gr.Markdown()
    with gr.Accordion("Push to the Hub", open=False):
        hub_repo = gr.Textbox(label="Repo (name: into your account once signed in; or user/name)" if SIGN_IN else "Repo (user/name)")
        hub_token = gr.Textbox(label="Token (write; not needed once signed in)" if SIGN_IN else "Token (write)", type="password")
        push = gr.Button("Push")
        push_message = gr.Markdown()
        push_file = gr.File(label="Merged folder (zip)", visible=True, interactive=False)

    def on_form(values: dict) -> ShownConfig:
        return form_to_yaml(controls.form(values), values[base_layers], values[yaml_box])

    def on_divergence(values: dict, progress=gr.Progress()) -> str:  # noqa: B008 -- Gradio injects it
        with as_visitor(values[session].visitor.token):
            return divergence_map(controls.request(values), progress)

    def on_parents(values: dict) -> tuple:
        # The parents panel and the YAML in one update: "✅ compatible" never shows above a YAML
        # that still names the old parents (a Merge clicked then was refused in Chromium).
        info, layers = describe_parents(values[parent_a], values[parent_b], values[session])
        return (info, layers, *form_to_yaml(controls.form(values), layers, values[yaml_box]))

    shown = [yaml_box, plot, form_message, preset, plan_box]
    to_yaml = dict(fn=on_form, inputs={*form_inputs, base_layers, yaml_box}, outputs=shown, api_visibility=PRIVATE)
    to_parents = dict(fn=on_parents, inputs={*form_inputs, yaml_box, session}, outputs=[parents_info, base_layers, *shown],
                      api_visibility=PRIVATE)
    preset.input(apply_preset, preset, [attn, mlp, default], api_visibility=PRIVATE).then(**to_yaml)
    # .change, not .input: in Gradio 6.31 a Textbox's .input does not fire on Backspace,
    # paste or select-all-delete, and the YAML kept the old value (seen in Chromium). One
    # event for every field, "always_last": an update started by an older edit (a preset
    # filling three fields) can never finish after a newer one and leave stale YAML.
    gr.on([parent_a.change, parent_b.change], **to_parents, trigger_mode="always_last")
    gr.on([component.change for component in form_inputs if component not in (parent_a, parent_b)], **to_yaml,
          trigger_mode="always_last")
    yaml_box.input(yaml_to_form, [yaml_box, base_layers], [*form_inputs, plot, form_message, preset, plan_box],
                   api_visibility=PRIVATE, trigger_mode="always_last")
    demo_outputs = [parent_a, parent_b, preset, attn, mlp, default, demo_parent.notice]
    # The form, YAML and plot are already on the page; this switches them to the demo pair
    # if it was built since start-up, fills the parents panel (the first start waits for the
    # bundled model's conversion here) and the plot's layer count.
    demo.load(lambda: fresh_defaults(pair), None, demo_outputs, api_visibility=PRIVATE).then(**to_parents)
    # The build runs in the background: these return at once, and no progress covers the form.
    demo_parent.build.click(lambda: start_build(build), None, demo_parent.message, api_visibility=PRIVATE,
                            show_progress="hidden", queue=False)
    demo_parent.cancel.click(lambda: cancel_build(build), None, demo_parent.message, api_visibility=PRIVATE,
                             show_progress="hidden", queue=False)
    # The form switches through its fields' own change events (the YAML, the parents panel).
    demo_parent.timer.tick(lambda shown, *form: show_build(build, shown, *form),
                           [demo_parent.shown, parent_a, parent_b, preset, attn, mlp, default],
                           [*demo_outputs, demo_parent.message, demo_parent.build, demo_parent.shown, demo_parent.timer],
                           api_visibility=PRIVATE,
                           show_progress="hidden", queue=False)
    def on_plan(values: dict) -> str:
        with as_visitor(values[session].visitor.token):
            return plan(controls.request(values), values[max_ram])

    plan_button.click(on_plan, controls.inputs(max_ram, session), plan_box,
                      api_visibility=PRIVATE)
    divergence_button.click(on_divergence, controls.inputs(session), heatmap, api_visibility=PRIVATE,
                            concurrency_id="device", concurrency_limit=1)
    for component in (*form_inputs, yaml_box, output_name, max_ram):
        component.input(after_edit, result, [plan_box, result], queue=False, api_visibility=PRIVATE)
    overwrite.input(after_edit, result, [plan_box, result], queue=False, api_visibility=PRIVATE)
    panel = [result, card, output_path, heatmap]
    merge_event = run.click(lambda values: start_merge(controls.request(values)), controls.inputs(), [*panel, approved],
                            api_visibility=PRIVATE).then(
        merge, [yaml_box, output_name, overwrite, session, approved, max_ram], panel, api_name="merge", concurrency_id="device",
        concurrency_limit=1)
    merge_event.then(lambda: (gr.Dropdown(choices=known_models()), gr.Dropdown(choices=known_models())), None, [parent_a, parent_b],
                     api_visibility=PRIVATE)
    output_path.change(lambda path: path or gr.skip(), output_path, own, api_visibility=PRIVATE, queue=False)
    demo.load(restored_merge, own, [result, output_path], api_visibility=PRIVATE, queue=False)
    cancel.click(cancel_merge, session, None, concurrency_limit=None, api_visibility=PRIVATE)
    push.click(lambda path, repo, typed, state: push_to_hub(path, repo, typed, state.visitor), [output_path, hub_repo, hub_token, session],
               [push_message, push_file], api_visibility=PRIVATE)
    return MergeTab(parent_a, parent_b, output_path, to_chat, session)
