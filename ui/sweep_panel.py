"""The Merge tab's t-sweep: for the YAML shown, which parent does the merge resemble at
each t? Runs the sweep over the demo prompts through its GPU boundary (evaluation.sweep.
sweep_stream: progress, and Cancel closes it), then draws the resemblance to parent B
against t with the parents at the ends, a table, and the merge's sample reply per t."""

from __future__ import annotations

import contextlib
import html
import time

import gradio as gr
import pandas as pd

from core.errors import UserError
from core.hub_access import as_visitor
from core.policy import check_models
from evaluation.prompt_set import DEMO_PROMPTS, PromptCase, read_prompts
from evaluation.sweep import DEFAULT_GRID, SweepPoint, SweepProgress, SweepRequest, parse_grid, sweep_stream
from merging.config import MergeConfig
from ui.context import PRIVATE, CancelSession, Visitor, cancel, short_name
from ui.merge_form import FormControls, FormRequest

DEFAULT_PROMPTS = 8  # with 5 values of t: 182 s for SmolLM2 on 2 CPU cores shared with other work (load ~7)
COLUMNS = ["t", "resemblance to B", "gap (B − A)", "n"]
IDLE = ("*Sweeps t over the YAML above: both parents answer the first prompts of `prompts/demo.jsonl`, then the merge at each "
        "t scores their replies. Resemblance to B: the share of prompts where the merge finds B's reply the likelier.*")
RUNNING = "⏳ **t-sweep running…** progress is shown here; **Cancel t-sweep** stops it."
CANCELLED = "### ⏹ t-sweep cancelled — run it again to see a result"


def demo_prompts() -> list[PromptCase]:
    return read_prompts(DEMO_PROMPTS, "prompts")


def blank() -> tuple[str, pd.DataFrame, str]:
    """No plot, no rows, no samples: what every state but done shows."""
    return "", pd.DataFrame(columns=COLUMNS), ""


def failed(exc: UserError) -> str:
    return f"### ❌ t-sweep failed\n{exc}"


def start_sweep(form: FormRequest, count: float, grid_text: str, scale_curve: bool, visitor: Visitor = Visitor()) -> tuple:  # noqa: B008 -- frozen
    """First step of a t-sweep click, at once: the running state with the previous result
    cleared and the request approved; or the failed state and None. The config goes through
    the Merge button's check, so the sweep runs the YAML on screen; the parents are read as
    the signed-in `visitor`."""
    try:
        config = form.config()
        with as_visitor(visitor.token):
            check_models(*config.models)
        grid = parse_grid(grid_text or "", "grid")
        prompts = demo_prompts()
        if count is None or not 1 <= int(count) <= len(prompts):
            raise UserError("prompts", f"{count} is not between 1 and {len(prompts)}", f"choose 1 to {len(prompts)} prompts")
    except UserError as exc:
        return failed(exc), *blank(), None
    return RUNNING, *blank(), SweepRequest(config, tuple(prompts[: int(count)]), grid, bool(scale_curve), token=visitor.token)


def run_sweep(request: SweepRequest | None, session: CancelSession, progress=gr.Progress()):  # noqa: B008 -- Gradio injects it
    """Second step: the sweep itself, streamed from its GPU boundary. Returns (status, plot,
    table, samples); a failure or Cancel ends in the status line with the rest left empty.
    Cancel closes the stream at its next step (on ZeroGPU: the worker's stop event)."""
    if request is None:
        return (gr.skip(),) * 4  # start_sweep refused; its message is on screen
    session.cancel.clear()
    started = time.perf_counter()
    points: tuple[SweepPoint, ...] | None = None
    try:
        with contextlib.closing(sweep_stream(request)) as events:
            for event in events:
                if isinstance(event, SweepProgress):
                    progress(event.done / event.total, desc=f"{event.stage} · {event.done}/{event.total}")
                else:
                    points = event
                if session.cancel.is_set():
                    break
    except UserError as exc:
        return failed(exc), *blank()
    if points is None:
        return CANCELLED, *blank()
    how = "each t scaling the YAML's curves" if request.scale_curve else "one constant t everywhere"
    status = (f"### ✅ t-sweep: {len(request.prompts)} prompts × {len(request.grid)} values of t ({how}) "
              f"in {time.perf_counter() - started:.0f} s")
    return status, plot_svg(list(points), request.config), table(list(points)), samples(list(points), request.prompts[0].text)


def table(points: list[SweepPoint]) -> pd.DataFrame:
    return pd.DataFrame([[f"{p.t:g}", f"{p.resemblance_b:.0%}", f"{p.gap:+.2f}", p.n] for p in points], columns=COLUMNS)


def samples(points: list[SweepPoint], prompt: str) -> str:
    lines = [f"**The merge's greedy reply to “{html.escape(prompt)}” at each t**", ""]
    lines += [f"- **t = {p.t:g}**{_end_label(p.t)}: {html.escape(p.sample.strip()) or '*(empty reply)*'}" for p in points]
    return "\n".join(lines)


def _end_label(t: float) -> str:
    return " (parent A)" if t == 0 else " (parent B)" if t == 1 else ""


def plot_svg(points: list[SweepPoint], config: MergeConfig) -> str:
    """Resemblance to B (0–100%) against t (0–1) as inline SVG; t = 0 is parent A and
    t = 1 parent B, named at the axis ends and at their points; 50% is the dashed line."""
    width, height, left, right, top, bottom = 640, 320, 56, 24, 48, 62
    a, b = html.escape(short_name(config.base_model)), html.escape(short_name(config.other_model))

    def x(t: float) -> float:
        return left + t * (width - left - right)

    def y(share: float) -> float:
        return top + (1 - share) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="Resemblance to parent B against t" style="font:13px sans-serif;background:#fff;color:#000">',
             f'<text x="{left}" y="18" fill="#000">Resemblance to parent B along t (share of {points[0].n if points else 0} '
             'prompts where the merge finds B\'s reply the likelier)</text>']
    for share in (0, 0.25, 0.5, 0.75, 1):
        dash = ' stroke-dasharray="4 3"' if share == 0.5 else ""
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(share):.1f}" y2="{y(share):.1f}" stroke="#bbb"{dash}/>'
                     f'<text x="{left - 6}" y="{y(share) + 4:.1f}" text-anchor="end" fill="#000">{share:.0%}</text>')
    for t in DEFAULT_GRID:
        parts.append(f'<text x="{x(t):.1f}" y="{height - bottom + 22}" text-anchor="middle" fill="#000">t = {t:g}</text>')
    parts.append(f'<text x="{x(0)}" y="{height - 10}" text-anchor="start" fill="#b45309">◀ Parent A: {a}</text>'
                 f'<text x="{x(1)}" y="{height - 10}" text-anchor="end" fill="#1d4ed8">Parent B: {b} ▶</text>')
    if points:
        line = " ".join(f"{x(p.t):.1f},{y(p.resemblance_b):.1f}" for p in points)
        parts.append(f'<polyline points="{line}" fill="none" stroke="#6d28d9" stroke-width="2"/>')
    for p in points:
        colour = "#b45309" if p.t == 0 else "#1d4ed8" if p.t == 1 else "#6d28d9"
        tip = f"t = {p.t:g}{_end_label(p.t)}: resemblance to B {p.resemblance_b:.0%}, gap {p.gap:+.2f}, n = {p.n}"
        parts.append(f'<circle cx="{x(p.t):.1f}" cy="{y(p.resemblance_b):.1f}" r="{7 if p.t in (0, 1) else 5}" fill="{colour}">'
                     f'<title>{tip}</title></circle>')
        label = "Parent A" if p.t == 0 else "Parent B" if p.t == 1 else f"{p.resemblance_b:.0%}"
        anchor = "start" if p.t == 0 else "end" if p.t == 1 else "middle"
        shift = 10 if p.t == 0 else -10 if p.t == 1 else 0
        parts.append(f'<text x="{x(p.t) + shift:.1f}" y="{y(p.resemblance_b) - 12:.1f}" text-anchor="{anchor}" fill="{colour}">'
                     f'{label}</text>')
    parts.append("</svg>")
    return "".join(parts)


def build_sweep_panel(form: FormControls, merge_session: gr.State) -> None:
    """The t-sweep section of the Merge tab, wired to the tab's YAML box and form, and to its
    session (the visitor signed in)."""
    session = gr.State(CancelSession())
    approved = gr.State(None)  # the SweepRequest start_sweep let through (None when it refused)
    prompt_count = len(demo_prompts())
    with gr.Accordion("t-sweep: which parent does the merge resemble, along t?", open=True, elem_id="t-sweep"):
        with gr.Row(equal_height=True):
            count = gr.Slider(1, prompt_count, min(DEFAULT_PROMPTS, prompt_count), step=1,
                              label=f"prompts (the first N of {prompt_count} in prompts/demo.jsonl)")
            grid = gr.Textbox(", ".join(f"{t:g}" for t in DEFAULT_GRID), label="grid: values of t in [0, 1]")
            scale_curve = gr.Checkbox(False, label="scale the YAML's t curves by each t (off: one constant t everywhere)")
        with gr.Row():
            run = gr.Button("t-sweep", variant="secondary")
            stop = gr.Button("Cancel t-sweep")
        status = gr.Markdown(IDLE)
        plot = gr.HTML()
        rows = gr.Dataframe(pd.DataFrame(columns=COLUMNS), label="t-sweep results", interactive=False)
        replies = gr.Markdown()
    outputs = [status, plot, rows, replies]

    def on_run(values: dict) -> tuple:
        return start_sweep(form.request(values), values[count], values[grid], values[scale_curve], values[merge_session].visitor)

    run.click(on_run, form.inputs(count, grid, scale_curve, merge_session), [*outputs, approved], api_visibility=PRIVATE,
              concurrency_limit=None).then(
        run_sweep, [approved, session], outputs, api_visibility=PRIVATE, concurrency_id="device", concurrency_limit=1)
    stop.click(cancel, session, None, concurrency_limit=None, api_visibility=PRIVATE)
