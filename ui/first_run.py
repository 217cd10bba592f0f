"""The first Chat: opened with no merged model, the Chat tab merges the Merge tab's
default pair into outputs/demo-merge first (a few seconds for SmolLM2), so the first
message shows three different panes. A merge already under that name is reused when it is
the same config and never replaced: a different one sends the new merge to demo-merge-2…

Two steps: deciding is instant and never waits for the device (a tab switch while replies
stream must not queue behind them); only a merge that is needed goes to the device queue."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from arena.chat_session import ChatSession
from core import places
from core.errors import UserError
from evaluation import defaults
from merging import parse_config
from ui import merge_tab
from ui.context import CancelSession, short_name

RUNNING = "⏳ **First chat: merging the default pair** (a few seconds for SmolLM2)… the panes are ready when this line changes."


def merge_name(yaml_text: str) -> tuple[str, bool]:
    """(name under outputs/, True when that folder already holds exactly this merge)."""
    root = places.outputs_root()
    for i in itertools.count(1):
        name = defaults.DEMO_MERGE if i == 1 else f"{defaults.DEMO_MERGE}-{i}"
        config = root / name / "mergekit_config.yml"
        if not (root / name).exists():
            return name, False
        if config.is_file() and config.read_text() == yaml_text:
            return name, True
    raise AssertionError("unreachable")


def notice(pair: defaults.StartPair, shown_path: str) -> str:
    if not pair.blend:
        return (f"ℹ️ **First chat:** nothing was merged yet, so the default merge is in `{shown_path}`: the original SmolLM2 "
                "with itself, so the three panes are one model (the merge, in int8, may word some replies differently). "
                "For a real blend, press **Build demo parent** on the Merge tab (a few minutes, once), then **Merge** and "
                "**Chat with this merge**.")
    return (f"✅ **First chat:** merged {short_name(pair.a)} (parent A) with {short_name(pair.b)} (parent B) on the {pair.preset} "
            f"curve into `{shown_path}`. Send a few messages: the three panes answer side by side, and the merge takes "
            "some replies more from one parent, some from the other.")


@dataclass(frozen=True)
class DefaultMerge:
    """The default merge the Chat tab asked for (a gr.State; its change event runs it)."""
    pair: defaults.StartPair
    name: str
    asked: int  # time.monotonic_ns(): every request differs from the last, so the change event fires


def on_chat_opened(merged_ref: str, chat_a: str, chat_b: str, session: ChatSession) -> tuple:
    """Opening the Chat tab, at once (not queued behind the device): (merged model, parent A,
    parent B, notice, default merge to run). Only while the parent fields hold their start
    values (models a visitor typed are theirs): with a merge under outputs/ (the latest,
    loaded with the page), its parents; with no merged model, the default merge when it is
    already on disk, else the running notice and the request for merge_defaults, whose
    models the session now expects (a message sent meanwhile waits for them)."""
    if (chat_a, chat_b) != (defaults.DEFAULT_A, defaults.DEFAULT_B):
        return (gr.skip(),) * 5
    # The page's load fills the latest merge; a tab opened before that load lands must not
    # start a default merge (seen in Chromium: a chat queued 60 s behind it on a fresh cache).
    typed = (merged_ref or "").strip()
    if ref := typed or defaults.latest_merge():
        return gr.skip() if typed else ref, *parents_of(ref), gr.skip(), gr.skip()
    pair = defaults.start_pair()
    name, done = merge_name(pair.yaml())
    if done:
        return *filled(pair, name), gr.skip()
    session.expect_merged()
    return gr.skip(), gr.skip(), gr.skip(), RUNNING, DefaultMerge(pair, name, time.monotonic_ns())


def merge_defaults(request: DefaultMerge, merged_ref: str, chat_a: str, chat_b: str, session: ChatSession,
                   progress=gr.Progress()) -> tuple:  # noqa: B008 -- Gradio injects it
    """The default merge, on the device queue: (merged model, parent A, parent B, notice).
    A request that an earlier one already fulfilled (the tab opened twice) reuses its merge.
    Models the visitor chose while it ran (the model fields, as they are now) are theirs and
    stay: seen in Chromium, typed parents were replaced by the default pair seconds later.
    The messages sent meanwhile are answered with the models it fills in."""
    shown = (gr.skip(),) * 4  # what a crash leaves
    try:
        shown = run_default_merge(request, merged_ref, chat_a, chat_b, progress)
    finally:
        session.merged_arrived(tuple(shown[:3]) if isinstance(shown[0], str) else None)
    return shown


def run_default_merge(request: DefaultMerge, merged_ref: str, chat_a: str, chat_b: str, progress) -> tuple:
    pair = request.pair
    name, done = merge_name(pair.yaml())
    if not done:
        # The Merge button's own handler (name rules, policy, progress, errors in one line);
        # it runs on the CPU, in this process, on ZeroGPU too.
        summary, _, output, _ = merge_tab.merge(pair.yaml(), name, False, CancelSession(), progress=progress)
        if not output:
            return gr.skip(), gr.skip(), gr.skip(), f"⚠️ The default merge failed: {summary.splitlines()[-1]} — merge on the Merge tab."
    if (merged_ref or "").strip() or (chat_a, chat_b) != (defaults.DEFAULT_A, defaults.DEFAULT_B):
        return gr.skip(), gr.skip(), gr.skip(), ""
    return filled(pair, name)


def filled(pair: defaults.StartPair, name: str) -> tuple[str, str, str, str]:
    """The three model fields and the notice for the default merge saved as outputs/<name>."""
    return str(places.outputs_root() / name), pair.a, pair.b, notice(pair, f"{places.outputs_root().name}/{name}")


def parents_of(merged_ref: str) -> tuple:
    """(parent A, parent B) of a merge under outputs/ (a t-preview's `#t=…` suffix ignored);
    skips for anything else."""
    if not (folder := defaults.own_merge(merged_ref.split("#")[0].strip())):
        return gr.skip(), gr.skip()
    try:
        config = parse_config((Path(folder) / "mergekit_config.yml").read_text())
    except UserError:
        return gr.skip(), gr.skip()
    return config.base_model, config.other_model
