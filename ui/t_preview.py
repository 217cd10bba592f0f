"""The instant t-preview: the Merged pane's model re-merged in memory at a new t curve
and swapped in, on the CPU in this process (no GPU quota)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import gradio as gr

from arena.chat_session import ChatSession
from core.errors import UserError
from core.policy import check_models
from inference import cache
from inference.loading import load_with_weights
from merging.form import config_from_form, form_from_yaml
from merging.merge import merge_in_memory
from ui.context import shown_as_toast

PREVIEW_MAX_BYTES = 2 * 10**9  # in-memory t-previews: small models only


def preview_curves(merged_ref: str) -> tuple:
    """The t-preview's fields for the Merged pane's model: its merge's own t curves (a merge
    made here), so a preview starts from what is loaded; left as they are for anything else
    (a t-preview of it, a Hub id, an endpoint)."""
    config_file = Path(merged_ref.strip()) / "mergekit_config.yml"
    if "#" in merged_ref or not merged_ref.strip() or not config_file.is_file():
        return gr.skip(), gr.skip(), gr.skip()
    try:
        form = form_from_yaml(config_file.read_text())
    except UserError:
        return gr.skip(), gr.skip(), gr.skip()
    return form.self_attn, form.mlp, form.default


@shown_as_toast
def preview_t(attn: str, mlp: str, default: str, merged_ref: str, merged_precision: str, session: ChatSession):
    """Re-merge the Merged pane's model in memory at a new t curve and swap it in (on the
    CPU, in this process: no GPU quota). Returns (new Merged source, a message with the timings)."""
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
    # The shared cache's device, as every other load: on ZeroGPU the main process's (emulated) cuda.
    loaded = load_with_weights(str(folder), weights, merged_precision, name, cache.MODELS.device, cache.MODELS.cores)
    if session.preview is not None:
        cache.MODELS.unload(session.preview)
    cache.MODELS.add(name, merged_precision, loaded)
    session.preview = loaded
    total = time.perf_counter() - started
    return name, (f"Re-merged in memory in {merged_s:.2f} s, loaded as {loaded.report.precision} in {total - merged_s:.2f} s "
                  f"(swap: {total:.2f} s). Send a message to chat with it.")
