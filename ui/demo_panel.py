"""The top of the Merge tab: the offline demo's second parent. While it is not built, a
highlighted notice says that the default merge is the original with itself and offers
to build it. The build is the app's background job (evaluation/demo_build.py): a line of
its own shows the stage and the time left, nothing covers the form, and Cancel stops it.
A timer keeps every page on the job's state: once the demo parent is built (here, by
another visitor, or on the command line), the notice says so and a form still on the
original-with-itself defaults switches to the demo pair."""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from core.places import ON_SPACE
from evaluation import defaults
from evaluation.demo_build import DemoBuild
from evaluation.demo_parent import demo_report
from merging.form import PRESETS

WHAT = "SmolLM2 fine-tuned to talk like a pirate without being asked"
ABOUT = f"{WHAT} (built once, a few minutes on an idle 2-core machine, then cached)"
TICK_S = 1.0


def notice_html(pair: defaults.StartPair) -> str:
    """Highlighted while the offline default is the original with itself; a plain line otherwise."""
    if ON_SPACE:
        return f"<p>Offline demo parent: {ABOUT}.</p>"
    if pair.blend:
        return (f"<p>✅ Demo parent built: <code>{html.escape(Path(pair.b).name)}</code> ({WHAT}). "
                f"The defaults merge the original (parent A) with it (parent B) on the {pair.preset} curve.</p>")
    return ("<div style='background:#fff4ce;border-left:6px solid #e0a000;padding:10px 14px;color:#222;border-radius:4px'>"
            "⚠️ <b>The demo parent is not built yet</b>, so the default merge is the original SmolLM2 with itself, and the "
            "Chat tab's three panes are one model. The <b>Build demo parent</b> button makes a second parent: "
            f"{ABOUT}. The defaults then merge the original (A) with the pirate (B) on a V-shaped t curve.</div>")


def report_text(folder: Path) -> str:
    """The build's figures on the held-out half of prompts/demo.jsonl, one line per model
    ('' for a folder without them)."""
    try:
        report = demo_report(folder)
    except OSError:
        return ""
    return "Held-out prompts, default sampling:\n" + "\n".join(f"- {name}: {quality.line()}" for name, quality in report.items())


def fresh_defaults(shown: defaults.StartPair) -> tuple:
    """On page load: when the demo parent was built after the page was made (by another
    visitor, or the command line), the demo pair and its notice; else nothing changes."""
    pair = defaults.start_pair()
    if pair == shown:
        return (gr.skip(),) * 7
    return (*_form_updates(pair), notice_html(pair))


def _form_updates(pair: defaults.StartPair) -> tuple:
    """Parent A, parent B, preset and the three t gradients set to `pair`."""
    choices = defaults.known_models()
    return (gr.Dropdown(choices=choices, value=pair.a, allow_custom_value=True),
            gr.Dropdown(choices=choices, value=pair.b, allow_custom_value=True), pair.preset,
            *PRESETS[pair.preset])


def start_build(job: DemoBuild) -> str:
    """Build pressed: the job starts (or goes on) in the background; its line comes at once."""
    return job.start().line() or "⏳ Building the demo parent: starting"


def cancel_build(job: DemoBuild) -> str:
    """Cancel pressed: the line says at once that the build stops (or that none runs)."""
    status = job.cancel()
    return status.line() if status.state in ("cancelling", "cancelled") else "No build is running."


def show_build(job: DemoBuild, shown: str, *form) -> tuple:
    """A tick: the job's line, and once it turns to built (the first tick that sees it on
    this page), the notice, the parents' list, and the demo pair in a form still on the
    original-with-itself defaults (a form the visitor changed is theirs). Returns (parent A,
    parent B, preset, three t gradients, notice, build line, Build button, the state shown,
    the timer: stopped once built, as there is nothing more to follow)."""
    status = job.status()
    if status.state != "built":
        busy = status.state in ("building", "cancelling")
        return (*[gr.skip()] * 6, gr.skip(), status.line() if busy or status.state != shown else gr.skip(),
                gr.Button(interactive=not busy), status.state, gr.skip())
    if shown == "built":
        return (*[gr.skip()] * 9, shown, gr.Timer(active=False))
    pair = defaults.demo_pair(status.folder)
    untouched = tuple(form) == _self_form()
    updates = _form_updates(pair) if untouched else (gr.Dropdown(choices=defaults.known_models()),) * 2 + (gr.skip(),) * 4
    line = f"✅ Demo parent ready. {'The form now merges the original (A) with the pirate (B): press **Merge**.' if untouched else ''}"
    line = "\n\n".join(filter(None, [line, report_text(Path(status.folder))]))
    return (*updates, notice_html(pair), line, gr.Button(interactive=True, variant="secondary"), "built", gr.Timer(active=False))


def _self_form() -> tuple:
    pair = defaults.StartPair(defaults.DEFAULT_A, defaults.DEFAULT_B, defaults.SELF_PRESET, False)
    return (pair.a, pair.b, pair.preset, *PRESETS[pair.preset])


@dataclass
class DemoRow:
    notice: gr.HTML
    build: gr.Button
    cancel: gr.Button
    message: gr.Markdown
    timer: gr.Timer
    shown: gr.State  # the job's state this page last showed


def demo_row(pair: defaults.StartPair) -> DemoRow:
    """The notice, Build and Cancel, and the build's own line (the tab wires them). Not on a
    Space: a visitor's build would train on the Space's CPU for minutes, and its folder is
    outside what public mode lets a merge read."""
    with gr.Row(equal_height=False, visible=not ON_SPACE):
        notice = gr.HTML(notice_html(pair), elem_id="demo-notice")
        build = gr.Button("Build demo parent", size="sm", scale=0, min_width=160, variant="secondary" if pair.blend else "primary")
        cancel = gr.Button("Cancel build", size="sm", scale=0, min_width=120)
    message = gr.Markdown(elem_id="demo-build-line")
    return DemoRow(notice, build, cancel, message, gr.Timer(TICK_S, active=not ON_SPACE),
                   gr.State("built" if pair.blend else "idle"))

