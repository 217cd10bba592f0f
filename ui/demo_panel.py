"""The top of the Merge tab: the offline demo's second parent. While it is not built, a
highlighted notice says that the default merge is the original with itself and offers
to build it (progress, Cancel); once built, the form switches to the demo pair."""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from core.places import ON_SPACE
from core.sources import DEFAULT_MODEL, resolve_model
from evaluation import defaults
from evaluation.demo_parent import build_demo_parent, demo_report
from merging.form import PRESETS
from ui.context import CancelSession

WHAT = "SmolLM2 fine-tuned to talk like a pirate without being asked"
ABOUT = f"{WHAT} (about 2½ min once on 2 cores, then cached)"
CANCELLED = "⏹ Build cancelled — nothing was saved; the defaults stay the original with itself."


class BuildCancelled(Exception):
    """Raised from the build's progress callback: the build stops before anything is saved."""


def notice_html(pair: defaults.StartPair) -> str:
    """Highlighted while the offline default is the original with itself; a plain line otherwise."""
    if ON_SPACE:
        return f"<p>Offline demo parent: {ABOUT}.</p>"
    if pair.blend:
        return (f"<p>✅ Demo parent built: <code>{html.escape(Path(pair.b).name)}</code> ({WHAT}). "
                f"The defaults merge the original (parent A) with it (parent B) on the {pair.preset} curve.</p>")
    return ("<div style='background:#fff4ce;border-left:6px solid #e0a000;padding:10px 14px;color:#222;border-radius:4px'>"
            "⚠️ <b>The demo parent is not built yet</b>, so the default merge is the original SmolLM2 with itself, and the "
            "Chat tab's three panes are one model. <b>Build demo parent</b> makes a second parent: "
            f"{ABOUT}. The defaults then merge the original (A) with the pirate (B) on a V-shaped t curve.</div>")


def build_demo(session: CancelSession, progress=gr.Progress()):  # noqa: B008 -- Gradio injects it
    """Build (or find) the demo parent, then put the demo pair into the form: (parent A,
    parent B, preset, three t gradients, notice, message, the Build button). Cancel stops
    it between steps."""
    session.cancel.clear()

    def on_progress(stage: str, done: int, total: int) -> None:
        if session.cancel.is_set():
            raise BuildCancelled
        progress(done / total, desc=f"{stage} {done}/{total}")

    started = time.perf_counter()
    try:
        folder = str(build_demo_parent(str(resolve_model(DEFAULT_MODEL)), on_progress=on_progress))
    except BuildCancelled:
        return *[gr.skip()] * 7, CANCELLED, gr.skip()
    pair = defaults.demo_pair(folder)
    message = (f"Demo parent ready in {time.perf_counter() - started:.0f} s. Parent A is the original, parent B the pirate, "
               f"on the {pair.preset} curve: press **Merge**, then **Chat with this merge**.\n\n{report_text(Path(folder))}")
    return (*_form_updates(pair), notice_html(pair), message, gr.Button(variant="secondary"))  # built: no longer the call to action


def report_text(folder: Path) -> str:
    """The build's figures on the held-out half of prompts/demo.jsonl, one line per model."""
    lines = [f"- {name}: {quality.line()}" for name, quality in demo_report(folder).items()]
    return "Held-out prompts, default sampling:\n" + "\n".join(lines)


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


@dataclass
class DemoRow:
    notice: gr.HTML
    build: gr.Button
    cancel: gr.Button
    message: gr.Markdown


def demo_row(pair: defaults.StartPair) -> DemoRow:
    """The notice, Build and Cancel, and the build's message line (the tab wires them).
    Not on a Space: a visitor's build would train on the Space's CPU for minutes, and its
    folder is outside what public mode lets a merge read."""
    with gr.Row(equal_height=False, visible=not ON_SPACE):
        notice = gr.HTML(notice_html(pair), elem_id="demo-notice")
        build = gr.Button("Build demo parent", size="sm", scale=0, min_width=160, variant="secondary" if pair.blend else "primary")
        cancel = gr.Button("Cancel build", size="sm", scale=0, min_width=120)
    return DemoRow(notice, build, cancel, gr.Markdown())
