"""The Merge tab: pick two parents, shape t per layer (form <-> YAML), plan, merge with
progress and cancel, look at θ, push to the Hub."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import pandas as pd

from core.errors import UserError
from core.sources import DEFAULT_MODEL, cache_root, resolve_model
from inference.demo_parent import build_demo_parent
from merging import Progress, parse_config, run_merge
from merging.analyze import angles_of_merge, divergence, divergence_grid
from merging.checkpoint import open_checkpoint
from merging.config import DTYPES
from merging.dry_run import dry_run
from merging.form import PRESETS, MergeForm, config_from_form, form_from_yaml, t_curves
from merging.hub import push_folder
from merging.inspect import compatibility_problems, inspect_model
from ui import context
from ui.context import DEFAULT_A, DEFAULT_B, ON_SPACE, PRIVATE, check_models, shown_as_toast

DEFAULT_PRESET = "V-shape" if ON_SPACE else "constant 0.5"
FALLBACK_LAYERS = 24  # for the t plot while a parent's layer count is unknown


class MergeSession:
    """Per visitor (gr.State): the event their Cancel sets. A plain class, not a
    dataclass: Gradio serializes dataclass states, and Events don't."""

    def __init__(self) -> None:
        self.cancel = threading.Event()

    def __deepcopy__(self, memo: dict) -> MergeSession:  # gr.State copies its default per session
        return MergeSession()


def known_models() -> list[str]:
    def folders(root: Path) -> list[str]:
        return sorted(str(p) for p in root.glob("*") if (p / "config.json").is_file()) if root.is_dir() else []

    return [DEFAULT_MODEL, *folders(cache_root() / "demo-parent"), *folders(context.outputs_root())]


def build_demo(progress=gr.Progress()):  # noqa: B008 -- Gradio injects it
    """The offline demo's second parent (SmolLM2 with a distilled pirate persona): built
    once (about two minutes on 2 cores), then cached. Sets it as parent B."""
    def on_progress(stage: str, done: int, total: int) -> None:
        progress(done / total, desc=f"{stage} {done}/{total}")

    started = time.perf_counter()
    folder = str(build_demo_parent(str(resolve_model(DEFAULT_MODEL)), on_progress=on_progress))
    choices = known_models()
    message = f"Demo parent ready in {time.perf_counter() - started:.0f} s: `{folder}` (set as parent B)."
    return gr.Dropdown(choices=choices), gr.Dropdown(choices=choices, value=folder), message


def describe_parents(a: str, b: str) -> tuple[str, int]:
    """The parents panel, and the base's layer count for the t plot (0 when unknown)."""
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
    base_layers = infos[0].num_layers if infos and infos[0].ref == a else 0
    return "\n\n".join(lines), base_layers


def apply_preset(name: str) -> tuple[str, str, str]:
    return PRESETS[name]


def form_to_yaml(a: str, b: str, attn: str, mlp: str, default: str, start: float, end: float, dtype: str,
                 base_layers: int = 0) -> tuple[str, pd.DataFrame, str]:
    """Form -> YAML text, t-curve plot, and a message (empty, or the one-line error)."""
    try:
        config = config_from_form(MergeForm(a, b, attn, mlp, default, int(start or 0), int(end or 0), dtype))
    except UserError as exc:
        return gr.skip(), gr.skip(), f"⚠️ {exc}"
    return config.to_yaml(), curve_frame(config, _layer_count(start, end, base_layers)), ""


def yaml_to_form(text: str, base_layers: int = 0):
    """Pasted YAML -> every form field, the plot and a message."""
    try:
        form = form_from_yaml(text)
        config = parse_config(text)
    except UserError as exc:
        return *[gr.skip()] * 9, f"⚠️ {exc}"
    return (form.base_model, form.other_model, form.self_attn, form.mlp, form.default, form.layer_start, form.layer_end,
            form.dtype, curve_frame(config, _layer_count(form.layer_start, form.layer_end, base_layers)), "")


def _layer_count(start: float, end: float, base_layers: int) -> int:
    return int(end) - int(start or 0) if end else (base_layers or FALLBACK_LAYERS)


def curve_frame(config, num_layers: int) -> pd.DataFrame:
    rows = [{"layer": i, "t": t, "curve": label} for label, curve in t_curves(config, num_layers).items() for i, t in enumerate(curve)]
    return pd.DataFrame(rows)


@shown_as_toast
def merge(yaml_text: str, output_name: str, overwrite: bool, session: MergeSession,
          progress=gr.Progress()):  # noqa: B008 -- Gradio injects it
    """Run the merge in the YAML. Returns (summary, model card, output path, θ heatmap)."""
    session.cancel.clear()
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", output_name.strip()).strip(".-")
    if not name:
        raise UserError("output name", "empty", "type a name for the merged model")

    def on_progress(p: Progress) -> None:
        progress(p.tensors_done / p.tensors_total,
                 desc=f"{p.tensors_done}/{p.tensors_total} tensors · {p.bytes_written / 1e6:.0f} MB written")

    result = run_merge(parse_config(yaml_text), context.outputs_root() / name, overwrite=overwrite, on_progress=on_progress,
                       cancel=session.cancel, policy=context.access_policy())
    summary = "\n".join([
        f"### ✅ Merged into `{result.output_dir}`",
        f"- {result.summary()}",
        *[f"- ⚠️ {w}" for w in result.warnings],
    ])
    heatmap = heatmap_html(*divergence_grid(angles_of_merge(result.tensors)), title="θ between the parents in this merge (degrees)")
    return summary, (result.output_dir / "README.md").read_text(), str(result.output_dir), heatmap


def plan(yaml_text: str) -> str:
    """Dry run: sizes, peak RAM, time estimate and warnings, without writing anything."""
    try:
        config = parse_config(yaml_text)
        check_models(*config.models)
        return "```\n" + dry_run(config).describe() + "\n```"
    except UserError as exc:
        return f"⚠️ {exc}"


def divergence_map(a: str, b: str, progress=gr.Progress()) -> str:  # noqa: B008 -- Gradio injects it
    """Heatmap of the angle between the parents per layer and component."""
    try:
        check_models(a, b)
        first, second = open_checkpoint(a, resolve_model(a)), open_checkpoint(b, resolve_model(b))
        angles = divergence(first, second, on_progress=lambda done, total: progress(done / total, desc=f"{done}/{total} tensors"))
    except UserError as exc:
        return f"⚠️ {exc}"
    return heatmap_html(*divergence_grid(angles), title=f"θ between {a} and {b} (degrees)")


def heatmap_html(columns: list[str], rows: list[tuple[str, list[float | None]]], title: str) -> str:
    """A table whose cells are shaded by θ: white at 0° (parents agree), deep red at 90°+."""
    def cell(theta: float | None) -> str:
        if theta is None:
            return "<td></td>"
        strength = min(theta / 90.0, 1.0)
        color = f"rgb(255,{int(255 * (1 - strength))},{int(255 * (1 - strength))})"
        return f'<td style="background:{color};text-align:right;padding:2px 6px">{theta:.1f}</td>'

    head = "".join(f"<th style='padding:2px 6px'>{c}</th>" for c in columns)
    body = "".join(f"<tr><th style='text-align:left;padding:2px 6px'>{name}</th>{''.join(cell(v) for v in values)}</tr>"
                   for name, values in rows)
    return (f"<div style='max-height:420px;overflow:auto'><b>{title}</b><table style='border-collapse:collapse;font-size:12px'>"
            f"<tr><th></th>{head}</tr>{body}</table></div>")


def cancel_merge(session: MergeSession) -> str:
    session.cancel.set()
    return "Cancelling… nothing is written to the output until the merge completes."


def push_to_hub(output_path: str, repo_id: str, token: str) -> str:
    if not output_path:
        return "⚠️ merge something first"
    try:
        return f"✅ pushed to {push_folder(Path(output_path), repo_id, token)}"
    except UserError as exc:
        return f"⚠️ {exc}"


@dataclass
class MergeTab:
    """The components app.py links to the Chat tab."""
    parent_a: gr.Dropdown
    parent_b: gr.Dropdown
    output_path: gr.Textbox
    to_chat: gr.Button


def build_merge_tab(demo: gr.Blocks) -> MergeTab:
    session = gr.State(MergeSession())
    base_layers = gr.State(0)
    with gr.Row():
        parent_a = gr.Dropdown(known_models(), value=DEFAULT_A, label="Parent A (base_model, t = 0)", allow_custom_value=True)
        parent_b = gr.Dropdown(known_models(), value=DEFAULT_B, label="Parent B (t = 1)", allow_custom_value=True)
    with gr.Row():
        parents_info = gr.Markdown()
        demo_button = gr.Button("Build the offline demo parent (SmolLM2 + distilled pirate persona, ~2 min once)", scale=0)
    demo_message = gr.Markdown()
    with gr.Row():
        with gr.Column(scale=3):
            preset = gr.Radio(list(PRESETS), value=DEFAULT_PRESET, label="Preset")
            attn = gr.Textbox(PRESETS[DEFAULT_PRESET][0], label="t gradient for self_attn")
            mlp = gr.Textbox(PRESETS[DEFAULT_PRESET][1], label="t gradient for mlp")
            default = gr.Textbox(PRESETS[DEFAULT_PRESET][2], label="t gradient for everything else")
            with gr.Row():
                layer_start = gr.Number(0, label="first layer", precision=0, minimum=0)
                layer_end = gr.Number(0, label="end layer (0 = all)", precision=0, minimum=0)
                dtype = gr.Dropdown(list(DTYPES), value="bfloat16", label="dtype")
            with gr.Row():
                output_name = gr.Textbox("my-merge", label="Output name (under outputs/)", scale=3)
                overwrite = gr.Checkbox(False, label="overwrite", scale=1)
        with gr.Column(scale=2):
            plot = gr.LinePlot(x="layer", y="t", color="curve", y_lim=[0, 1], label="t per layer", height=260)
    form_message = gr.Markdown()
    yaml_box = gr.Code(language="yaml", label="mergekit YAML (edit or paste: the form follows)", lines=14)
    with gr.Row():
        run = gr.Button("Merge", variant="primary")
        cancel = gr.Button("Cancel")
        plan_button = gr.Button("Plan (dry run)")
        divergence_button = gr.Button("Divergence map")
    plan_box = gr.Markdown()
    result = gr.Markdown()
    heatmap = gr.HTML()
    output_path = gr.Textbox(label="Output folder", interactive=False)
    to_chat = gr.Button("Chat with this merge")
    with gr.Accordion("Model card", open=False):
        card = gr.Markdown()
    with gr.Accordion("Push to the Hub", open=False):
        hub_repo = gr.Textbox(label="Repo (user/name)")
        hub_token = gr.Textbox(label="Token (write)", type="password")
        push = gr.Button("Push")
        push_message = gr.Markdown()

    form_inputs = [parent_a, parent_b, attn, mlp, default, layer_start, layer_end, dtype]
    to_yaml = dict(fn=form_to_yaml, inputs=[*form_inputs, base_layers], outputs=[yaml_box, plot, form_message],
                   api_visibility=PRIVATE)
    for component in (parent_a, parent_b):
        component.change(describe_parents, [parent_a, parent_b], [parents_info, base_layers], api_visibility=PRIVATE).then(**to_yaml)
    preset.input(apply_preset, preset, [attn, mlp, default], api_visibility=PRIVATE).then(**to_yaml)
    for component in form_inputs:
        component.input(**to_yaml)
    yaml_box.input(yaml_to_form, [yaml_box, base_layers], [*form_inputs, plot, form_message], api_visibility=PRIVATE)
    # The YAML first (instant), then the parents (the first start converts the bundled GGUF), then the plot.
    demo.load(**to_yaml).then(describe_parents, [parent_a, parent_b], [parents_info, base_layers],
                              api_visibility=PRIVATE).then(**to_yaml)
    demo_button.click(build_demo, None, [parent_a, parent_b, demo_message], api_visibility=PRIVATE,
                      concurrency_id="device", concurrency_limit=1)
    plan_button.click(plan, yaml_box, plan_box, api_visibility=PRIVATE)
    divergence_button.click(divergence_map, [parent_a, parent_b], heatmap, api_visibility=PRIVATE,
                            concurrency_id="device", concurrency_limit=1)
    merge_event = run.click(merge, [yaml_box, output_name, overwrite, session], [result, card, output_path, heatmap],
                            api_name="merge", concurrency_id="device", concurrency_limit=1)
    merge_event.then(lambda: (gr.Dropdown(choices=known_models()), gr.Dropdown(choices=known_models())), None, [parent_a, parent_b],
                     api_visibility=PRIVATE)
    cancel.click(cancel_merge, session, result, concurrency_limit=None, api_visibility=PRIVATE)
    push.click(push_to_hub, [output_path, hub_repo, hub_token], push_message, api_visibility=PRIVATE)
    return MergeTab(parent_a, parent_b, output_path, to_chat)
