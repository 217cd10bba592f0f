"""The first Chat: opened with no merged model, the Chat tab merges the Merge tab's
default pair into outputs/demo-merge first (a few seconds for SmolLM2), so the first
message shows three different panes. A merge already under that name is reused when it is
the same config and never replaced: a different one sends the new merge to demo-merge-2…"""

from __future__ import annotations

import itertools

import gradio as gr

from core.errors import UserError
from merging import parse_config
from ui import context, defaults, merge_tab
from ui.context import CancelSession, short_name

DEMO_MERGE = "demo-merge"
RUNNING = "⏳ **First chat: merging the default pair** (a few seconds for SmolLM2)… the panes are ready when this line changes."


def merge_name(yaml_text: str) -> tuple[str, bool]:
    """(name under outputs/, True when that folder already holds exactly this merge)."""
    root = context.outputs_root()
    for i in itertools.count(1):
        name = DEMO_MERGE if i == 1 else f"{DEMO_MERGE}-{i}"
        config = root / name / "mergekit_config.yml"
        if not (root / name).exists():
            return name, False
        if config.is_file() and config.read_text() == yaml_text:
            return name, True
    raise AssertionError("unreachable")


def notice(pair: defaults.StartPair, shown_path: str) -> str:
    if not pair.blend:
        return (f"ℹ️ **First chat:** nothing was merged yet, so the default merge is in `{shown_path}`: the original SmolLM2 "
                "with itself, so all three panes answer alike. For a real blend, press **Build demo parent** on the Merge tab "
                "(about 2 min once), then **Merge** and **Chat with this merge**.")
    return (f"✅ **First chat:** merged {short_name(pair.a)} (parent A) with {short_name(pair.b)} (parent B) on the {pair.preset} "
            f"curve into `{shown_path}`. Send a message: the three panes answer side by side.")


def first_chat(merged_ref: str, chat_a: str, chat_b: str, progress=gr.Progress()):  # noqa: B008 -- Gradio injects it
    """On opening the Chat tab: (merged model, parent A, parent B, notice). Only while the
    parent fields hold their start values (models a visitor typed are theirs): with no
    merged model, merge the defaults (or reuse that merge) and fill all three; with a merge
    under outputs/ (the latest, loaded with the page), fill in its parents."""
    if (chat_a, chat_b) != (context.DEFAULT_A, context.DEFAULT_B):
        yield (gr.skip(),) * 4
        return
    if (merged_ref or "").strip():
        yield gr.skip(), *parents_of(merged_ref), gr.skip()
        return
    pair = defaults.start_pair()
    yaml_text = merge_tab.form_to_yaml(*pair.fields())[0]
    name, done = merge_name(yaml_text)
    shown_path = f"{context.outputs_root().name}/{name}"
    if not done:
        yield gr.skip(), gr.skip(), gr.skip(), RUNNING
        # The Merge button's own handler (name rules, policy, progress, errors in one line);
        # it is wrapped for ZeroGPU itself, so this handler is not.
        summary, _, output, _ = merge_tab.merge(yaml_text, name, False, CancelSession(), progress=progress)
        if not output:
            yield gr.skip(), gr.skip(), gr.skip(), f"⚠️ The default merge failed: {summary.splitlines()[-1]} — merge on the Merge tab."
            return
    yield str(context.outputs_root() / name), pair.a, pair.b, notice(pair, shown_path)


def parents_of(merged_ref: str) -> tuple:
    """(parent A, parent B) of a merge under outputs/ (a t-preview's `#t=…` suffix ignored);
    skips for anything else."""
    root = context.outputs_root().resolve()
    config_file = (root / merged_ref.split("#")[0].strip()).resolve() / "mergekit_config.yml"
    if not config_file.is_relative_to(root) or not config_file.is_file():
        return gr.skip(), gr.skip()
    try:
        config = parse_config(config_file.read_text())
    except UserError:
        return gr.skip(), gr.skip()
    return config.base_model, config.other_model
