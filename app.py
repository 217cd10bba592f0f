"""Slerp Arena — the Gradio UI. It only wires the Merge and Chat tabs to `merging` and
`inference`; every handler is a plain (generator) function that tests call directly."""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from inference import GenerationSettings, InferenceError, ModelCache
from inference.arena import PANE_LABELS, ArenaSession, clear, export_json, export_markdown, regenerate, send, vote
from inference.demo_parent import build_demo_parent
from inference.loading import load_with_weights
from inference.sources import cache_root as inference_cache_root
from inference.votes import VoteStore, config_hash
from merging import MergeError, Progress, parse_config, run_merge
from merging.analyze import angles_of_merge, divergence, divergence_grid
from merging.checkpoint import open_checkpoint
from merging.dry_run import dry_run
from merging.form import PRESETS, MergeForm, config_from_form, form_from_yaml, t_curves
from merging.hub import push_folder
from merging.inspect import compatibility_problems, inspect_model
from merging.merge import merge_in_memory
from merging.policy import AccessPolicy, policy_from_env
from merging.sources import BUNDLED_PREFIX, resolve_model

OUTPUTS = Path(os.environ.get("SLERP_ARENA_OUTPUTS", Path(__file__).resolve().parent / "outputs"))
VOTES_PATH = Path(os.environ.get("SLERP_ARENA_VOTES", Path(__file__).resolve().parent / "data" / "votes.sqlite"))
MODELS_ROOT = Path(os.environ.get("SLERP_ARENA_MODELS", Path(__file__).resolve().parent / "models"))
BUNDLED = f"{BUNDLED_PREFIX}SmolLM2-135M-Instruct"
ON_SPACE = bool(os.environ.get("SPACE_ID"))
# Offline: the bundled SmolLM2 with itself. On a Space: the Qwen2.5 seed pair, Instruct as base, V-curve.
DEFAULT_A, DEFAULT_B = ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-0.5B") if ON_SPACE else (BUNDLED, BUNDLED)
DEFAULT_PRESET = "V-shape" if ON_SPACE else "constant 0.5"
DTYPES = ["bfloat16", "float16", "float32"]
CHAT_PRECISIONS = ["auto", "fp8", "int8", "bf16"]
PREVIEW_MAX_BYTES = 2 * 10**9  # in-memory t-previews: small models only
PRIVATE = "private"  # events that are UI plumbing, not part of the API

models = ModelCache()  # shared by all visitors: each (model, precision) is loaded once


def access_policy() -> AccessPolicy | None:
    """Public mode (on a Space, or SLERP_ARENA_PUBLIC=1): local paths only under the roots."""
    return policy_from_env((MODELS_ROOT,), OUTPUTS)


class SessionState:
    """Per visitor (gr.State): their chat panes and the events their Stop / Cancel set.
    A plain class, not a dataclass: Gradio serializes dataclass states, and Events don't."""

    def __init__(self) -> None:
        self.arena = ArenaSession()
        self.preview = None  # this visitor's in-memory t-preview model, freed when replaced
        self.cancel_merge = threading.Event()
        self.stop_chat = threading.Event()

    def __deepcopy__(self, memo: dict) -> SessionState:  # gr.State copies its default per session
        return SessionState()


# ---------------------------------------------------------------- merge tab handlers

def known_models() -> list[str]:
    def folders(root: Path) -> list[str]:
        return sorted(str(p) for p in root.glob("*") if (p / "config.json").is_file()) if root.is_dir() else []

    return [BUNDLED, *folders(inference_cache_root() / "demo-parent"), *folders(OUTPUTS)]


def build_demo(progress=gr.Progress()):  # noqa: B008 -- Gradio injects it
    """The offline demo's second parent (SmolLM2 with a distilled pirate persona): built
    once (about two minutes on 2 cores), then cached. Sets it as parent B."""
    def on_progress(stage: str, done: int, total: int) -> None:
        progress(done / total, desc=f"{stage} {done}/{total}")

    started = time.perf_counter()
    folder = str(build_demo_parent(str(resolve_model(BUNDLED)), on_progress=on_progress))
    choices = known_models()
    message = f"Demo parent ready in {time.perf_counter() - started:.0f} s: `{folder}` (set as parent B)."
    return gr.Dropdown(choices=choices), gr.Dropdown(choices=choices, value=folder), message


def describe_parents(a: str, b: str) -> str:
    lines, infos = [], []
    for label, ref in (("Parent A (base)", a), ("Parent B", b)):
        if not ref:
            lines.append(f"{label}: not chosen")
            continue
        try:
            if (policy := access_policy()) is not None:
                policy.check_model(ref)
            info = inspect_model(ref)
            infos.append(info)
            lines.append(f"{label}: {info.describe()}")
        except MergeError as exc:
            lines.append(f"{label}: ⚠️ {exc}")
    if len(infos) == 2:
        problems = compatibility_problems(*infos)
        lines += [f"⚠️ {p}" for p in problems] or ["✅ compatible"]
    return "\n\n".join(lines)


def apply_preset(name: str) -> tuple[str, str, str]:
    return PRESETS[name]


def form_to_yaml(a: str, b: str, attn: str, mlp: str, default: str, start: float, end: float, dtype: str) -> tuple[str, pd.DataFrame, str]:
    """Form -> YAML text, t-curve plot, and a message (empty, or the one-line error)."""
    try:
        config = config_from_form(MergeForm(a, b, attn, mlp, default, int(start or 0), int(end or 0), dtype))
    except MergeError as exc:
        return gr.skip(), gr.skip(), f"⚠️ {exc}"
    return config.to_yaml(), curve_frame(config, _layer_count(a, start, end)), ""


def yaml_to_form(text: str):
    """Pasted YAML -> every form field, the plot and a message."""
    try:
        form = form_from_yaml(text)
        config = parse_config(text)
    except MergeError as exc:
        return *[gr.skip()] * 9, f"⚠️ {exc}"
    return (form.base_model, form.other_model, form.self_attn, form.mlp, form.default, form.layer_start, form.layer_end,
            form.dtype, curve_frame(config, _layer_count(form.base_model, form.layer_start, form.layer_end)), "")


def _layer_count(ref: str, start: float, end: float) -> int:
    return int(end) - int(start or 0) if end else _base_layers(ref)


@functools.lru_cache(maxsize=64)
def _base_layers(ref: str) -> int:
    """Layers of a parent, for the t plot. Cached: the form asks on every keystroke, and
    for a Hub id each look-up is a round trip."""
    try:
        return inspect_model(ref).num_layers or 24
    except MergeError:
        return 24


def curve_frame(config, num_layers: int) -> pd.DataFrame:
    rows = [{"layer": i, "t": t, "curve": label} for label, curve in t_curves(config, num_layers).items() for i, t in enumerate(curve)]
    return pd.DataFrame(rows)


def merge(yaml_text: str, output_name: str, overwrite: bool, state: SessionState | None,
          progress=gr.Progress()):  # noqa: B008 -- Gradio injects it
    """Run the merge in the YAML. Returns (summary, model card, state, output path, θ heatmap)."""
    state = state or SessionState()
    state.cancel_merge.clear()
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", output_name.strip()).strip(".-")
    if not name:
        raise gr.Error("output name: empty — type a name for the merged model")

    def on_progress(p: Progress) -> None:
        progress(p.tensors_done / p.tensors_total,
                 desc=f"{p.tensors_done}/{p.tensors_total} tensors · {p.bytes_written / 1e6:.0f} MB written")

    try:
        result = run_merge(parse_config(yaml_text), OUTPUTS / name, overwrite=overwrite, on_progress=on_progress,
                           cancel=state.cancel_merge, policy=access_policy())
    except MergeError as exc:
        raise gr.Error(str(exc)) from None
    blended = sum(1 for r in result.tensors if 0 < r.t < 1)
    summary = "\n".join([
        f"### ✅ Merged into `{result.output_dir}`",
        f"- {len(result.tensors)} tensors ({blended} blended), {result.num_layers} layers",
        f"- {result.bytes_written / 1e6:.0f} MB written in {result.seconds:.1f} s",
        *[f"- ⚠️ {w}" for w in result.warnings],
    ])
    heatmap = heatmap_html(*divergence_grid(angles_of_merge(result.tensors)), title="θ between the parents in this merge (degrees)")
    return summary, (result.output_dir / "README.md").read_text(), state, str(result.output_dir), heatmap


def plan(yaml_text: str) -> str:
    """Dry run: sizes, peak RAM, time estimate and warnings, without writing anything."""
    try:
        config = parse_config(yaml_text)
        if (policy := access_policy()) is not None:
            for ref in config.models:
                policy.check_model(ref)
        return "```\n" + dry_run(config).describe() + "\n```"
    except MergeError as exc:
        return f"⚠️ {exc}"


def divergence_map(a: str, b: str, progress=gr.Progress()) -> str:  # noqa: B008 -- Gradio injects it
    """Heatmap of the angle between the parents per layer and component."""
    try:
        if (policy := access_policy()) is not None:
            policy.check_model(a)
            policy.check_model(b)
        first, second = open_checkpoint(a, resolve_model(a)), open_checkpoint(b, resolve_model(b))
        angles = divergence(first, second, on_progress=lambda done, total: progress(done / total, desc=f"{done}/{total} tensors"))
    except MergeError as exc:
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


def cancel_merge(state: SessionState | None) -> str:
    if state is not None:
        state.cancel_merge.set()
    return "Cancelling… nothing is written to the output until the merge completes."


def push_to_hub(output_path: str, repo_id: str, token: str) -> str:
    if not output_path:
        return "⚠️ merge something first"
    try:
        return f"✅ pushed to {push_folder(Path(output_path), repo_id, token)}"
    except MergeError as exc:
        return f"⚠️ {exc}"


# ---------------------------------------------------------------- chat tab handlers

def chat_source(ref: str) -> str:
    """The bundled GGUF loads from merging's converted safetensors cache (seconds, not a
    GGUF dequantization at every load)."""
    ref = ref.strip()
    if (policy := access_policy()) is not None:
        policy.check_model(ref)
    if ref.startswith(BUNDLED_PREFIX) or ref.endswith(".gguf"):
        return str(resolve_model(ref))
    return ref


def _settings(temperature: float, top_p: float, max_new_tokens: float, seed: float) -> GenerationSettings:
    return GenerationSettings(temperature=float(temperature), top_p=float(top_p), max_new_tokens=int(max_new_tokens), seed=int(seed))


def _configure(state: SessionState, refs: list[str], merged_precision: str, parent_precision: str, enabled: list[bool]) -> None:
    """Point the panes at their models; a refused or missing source leaves its pane idle
    with the reason shown under it, while the other panes answer."""
    sources, problems = [], []
    for ref in refs:
        try:
            sources.append(chat_source(ref) if ref.strip() else "")
            problems.append("")
        except MergeError as exc:
            sources.append("")
            problems.append(f"⚠️ {exc}")
    labels = list(PANE_LABELS)
    state.arena.configure(dict(zip(labels, sources, strict=True)),
                          dict(zip(labels, [merged_precision, parent_precision, parent_precision], strict=True)),
                          dict(zip(labels, enabled, strict=True)))
    for label, problem in zip(labels, problems, strict=True):
        if problem:
            state.arena.pane(label).status = problem


def _view(state: SessionState, relabel: bool = False) -> tuple:
    """Three chat histories, three stats lines, the vote row, state. Pane titles change only
    when blind mode shuffles or reveals (`relabel`); chat updates stay plain values, so
    API clients get plain histories."""
    arena = state.arena
    bots = ([gr.Chatbot(value=p.history, label=label) for p, label in zip(arena.panes, arena.display_labels(), strict=True)]
            if relabel else [p.history for p in arena.panes])
    voting = arena.blind and not arena.revealed and arena.replies_in()
    return (*bots, *[p.status for p in arena.panes], gr.Row(visible=voting), state)


def chat(message: str, system_prompt: str, temperature: float, top_p: float, max_new_tokens: float, seed: float,
         merged_ref: str, parent_a_ref: str, parent_b_ref: str, merged_on: bool, parent_a_on: bool, parent_b_on: bool,
         merged_precision: str, parent_precision: str, state: SessionState | None):
    """Send one message to every switched-on pane; yields (3 chats, 3 stats, state)."""
    state = state or SessionState()
    _configure(state, [merged_ref, parent_a_ref, parent_b_ref], merged_precision, parent_precision, [merged_on, parent_a_on, parent_b_on])
    state.stop_chat.clear()
    try:
        for _ in send(state.arena, models, message, _settings(temperature, top_p, max_new_tokens, seed), system_prompt, state.stop_chat):
            yield _view(state)
    except InferenceError as exc:
        raise gr.Error(str(exc)) from None


def regenerate_last(system_prompt: str, temperature: float, top_p: float, max_new_tokens: float, seed: float,
                    state: SessionState | None):
    state = state or SessionState()
    state.stop_chat.clear()
    try:
        for _ in regenerate(state.arena, models, _settings(temperature, top_p, max_new_tokens, seed), system_prompt, state.stop_chat):
            yield _view(state)
    except InferenceError as exc:
        raise gr.Error(str(exc)) from None


def stop_chat(state: SessionState | None) -> None:
    if state is not None:
        state.stop_chat.set()


def clear_chat(state: SessionState | None) -> tuple:
    state = state or SessionState()
    clear(state.arena)
    return _view(state, relabel=True)


def vote_store() -> VoteStore:
    return VoteStore(VOTES_PATH)


def set_blind(blind: bool, state: SessionState | None) -> tuple:
    state = state or SessionState()
    state.arena.set_blind(blind)
    return _view(state, relabel=True)


def submit_vote(best: str, worst: str, temperature: float, top_p: float, max_new_tokens: float, seed: float,
                state: SessionState | None) -> tuple:
    """Record the vote, reveal the names, and show the scoreboard of this merge config."""
    state = state or SessionState()
    merged = state.arena.pane("Merged").ref
    digest = config_hash(merged)
    try:
        vote(state.arena, vote_store(), best or "", worst or "", _settings(temperature, top_p, max_new_tokens, seed), digest)
    except InferenceError as exc:
        raise gr.Error(str(exc)) from None
    return (*_view(state, relabel=True), scoreboard_markdown(digest))


def scoreboard_markdown(digest: str) -> str:
    scores = vote_store().scoreboard(digest)
    if not scores:
        return "No votes for this merge yet."
    rows = "\n".join(f"| {s.model} | {s.best} | {s.worst} | {s.net:+d} |" for s in scores)
    header = "| model | best | worst | net |\n|---|---|---|---|"
    return f"**Scoreboard for merge config `{digest}`** (ties: {scores[0].ties})\n\n{header}\n{rows}"


def export_session(temperature: float, top_p: float, max_new_tokens: float, seed: float, state: SessionState | None) -> list[str]:
    """The conversation of every pane, settings and votes, as Markdown and JSON files."""
    state = state or SessionState()
    settings = _settings(temperature, top_p, max_new_tokens, seed)
    folder = Path(tempfile.mkdtemp(prefix="slerp-arena-export-"))
    (folder / "comparison.md").write_text(export_markdown(state.arena, settings))
    (folder / "comparison.json").write_text(export_json(state.arena, settings))
    return [str(folder / "comparison.md"), str(folder / "comparison.json")]


def preview_t(attn: str, mlp: str, default: str, merged_ref: str, merged_precision: str, state: SessionState | None):
    """Re-merge the Merged pane's model in memory at a new t curve and swap it in.
    Returns (new Merged source, a message with the timings, state)."""
    state = state or SessionState()
    folder = Path(merged_ref.split("#t=")[0].strip())
    config_file = folder / "mergekit_config.yml"
    if not config_file.is_file():
        raise gr.Error("t-preview: the Merged pane is not a merge made here — run a merge, then 'Chat with this merge'")
    try:
        if (policy := access_policy()) is not None:
            policy.check_model(str(folder))
        form = dataclasses.replace(form_from_yaml(config_file.read_text()), self_attn=attn, mlp=mlp, default=default)
        started = time.perf_counter()
        weights = merge_in_memory(config_from_form(form), PREVIEW_MAX_BYTES)
        merged_s = time.perf_counter() - started
        name = f"{folder}#t=self_attn[{attn}] mlp[{mlp}] default[{default}]"
        loaded = load_with_weights(str(folder), weights, merged_precision, name)
    except (MergeError, InferenceError) as exc:
        raise gr.Error(str(exc)) from None
    if state.preview is not None:
        models.unload(state.preview)
    models.add(name, loaded)
    state.preview = loaded
    total = time.perf_counter() - started
    return name, f"Re-merged in memory in {merged_s:.2f} s, loaded as {loaded.report.precision} in {total - merged_s:.2f} s " \
                 f"(swap: {total:.2f} s). Send a message to chat with it.", state


def chat_with_merge(output_path: str, parent_a: str, parent_b: str):
    if not output_path:
        raise gr.Error("merge: nothing merged yet — run a merge first")
    return output_path, parent_a, parent_b, gr.Tabs(selected="chat")


# ---------------------------------------------------------------- layout

def build_app() -> gr.Blocks:
    with gr.Blocks(title="Slerp Arena") as demo:
        state = gr.State(SessionState())
        gr.Markdown("# 🧪 Slerp Arena\nSLERP-merge two language models (mergekit-compatible), then chat with the merge beside its parents.")
        with gr.Tabs() as tabs:
            with gr.Tab("Merge", id="merge"):
                with gr.Row():
                    parent_a = gr.Dropdown(known_models(), value=DEFAULT_A, label="Parent A (base_model, t = 0)", allow_custom_value=True)
                    parent_b = gr.Dropdown(known_models(), value=DEFAULT_B, label="Parent B (t = 1)", allow_custom_value=True)
                with gr.Row():
                    parents_info = gr.Markdown()
                    demo_button = gr.Button("Build the offline demo parent (SmolLM2 + distilled pirate persona, ~2 min once)",
                                            scale=0)
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
                            dtype = gr.Dropdown(DTYPES, value="bfloat16", label="dtype")
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

            with gr.Tab("Chat", id="chat"):
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
                    for label in ("Merged", "Parent A", "Parent B"):
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

        # Merge tab wiring.
        form_inputs = [parent_a, parent_b, attn, mlp, default, layer_start, layer_end, dtype]
        for component in (parent_a, parent_b):
            component.change(describe_parents, [parent_a, parent_b], parents_info, api_visibility=PRIVATE)
        preset.input(apply_preset, preset, [attn, mlp, default], api_visibility=PRIVATE).then(
            form_to_yaml, form_inputs, [yaml_box, plot, form_message], api_visibility=PRIVATE)
        for component in form_inputs:
            component.input(form_to_yaml, form_inputs, [yaml_box, plot, form_message], api_visibility=PRIVATE)
        yaml_box.input(yaml_to_form, yaml_box, [*form_inputs, plot, form_message], api_visibility=PRIVATE)
        demo.load(form_to_yaml, form_inputs, [yaml_box, plot, form_message], api_visibility=PRIVATE).then(
            describe_parents, [parent_a, parent_b], parents_info, api_visibility=PRIVATE)
        demo_button.click(build_demo, None, [parent_a, parent_b, demo_message], api_visibility=PRIVATE,
                          concurrency_id="device", concurrency_limit=1).then(
            form_to_yaml, form_inputs, [yaml_box, plot, form_message], api_visibility=PRIVATE)
        plan_button.click(plan, yaml_box, plan_box, api_visibility=PRIVATE)
        divergence_button.click(divergence_map, [parent_a, parent_b], heatmap, api_visibility=PRIVATE,
                                concurrency_id="device", concurrency_limit=1)
        merge_event = run.click(merge, [yaml_box, output_name, overwrite, state], [result, card, state, output_path, heatmap],
                                api_name="merge",
                                concurrency_id="device", concurrency_limit=1)
        merge_event.then(lambda: (gr.Dropdown(choices=known_models()), gr.Dropdown(choices=known_models())), None, [parent_a, parent_b],
                         api_visibility=PRIVATE)
        cancel.click(cancel_merge, state, result, concurrency_limit=None, api_visibility=PRIVATE)
        push.click(push_to_hub, [output_path, hub_repo, hub_token], push_message, api_visibility=PRIVATE)
        to_chat.click(chat_with_merge, [output_path, parent_a, parent_b], [merged_ref, chat_a, chat_b, tabs], api_visibility=PRIVATE)

        # Chat tab wiring.
        bots, stats_boxes = [p[1] for p in panes], [p[2] for p in panes]
        sampling = [temperature, top_p, max_new_tokens, seed]
        chat_inputs = [message, system_prompt, *sampling, merged_ref, chat_a, chat_b, *[p[0] for p in panes],
                       merged_precision, parent_precision, state]
        chat_outputs = [*bots, *stats_boxes, vote_row, state]
        send_event = send_button.click(chat, chat_inputs, chat_outputs, api_name="chat", concurrency_id="device", concurrency_limit=1)
        submit_event = message.submit(chat, chat_inputs, chat_outputs, api_visibility=PRIVATE, concurrency_id="device", concurrency_limit=1)
        for event in (send_event, submit_event):
            event.then(lambda: "", None, message, api_visibility=PRIVATE)
        regen_button.click(regenerate_last, [system_prompt, *sampling, state], chat_outputs, api_name="regenerate",
                           concurrency_id="device", concurrency_limit=1)
        stop_button.click(stop_chat, state, None, concurrency_limit=None, api_visibility=PRIVATE)
        clear_button.click(clear_chat, state, chat_outputs, api_visibility=PRIVATE)
        blind.change(set_blind, [blind, state], chat_outputs, api_visibility=PRIVATE)
        vote_button.click(submit_vote, [best, worst, *sampling, state], [*chat_outputs, scoreboard], api_visibility=PRIVATE)
        export_button.click(export_session, [*sampling, state], export_files, api_visibility=PRIVATE)
        preview_button.click(preview_t, [preview_attn, preview_mlp, preview_default, merged_ref, merged_precision, state],
                             [merged_ref, preview_message, state], api_visibility=PRIVATE, concurrency_id="device", concurrency_limit=1)
    return demo


if __name__ == "__main__":
    build_app().queue(default_concurrency_limit=1).launch(show_error=True)
