"""Instant t-preview: re-merge in memory and swap the Merged pane's model."""

import gradio as gr
import pytest
import torch
from helpers import tiny_yaml, unpack
from safetensors.torch import load_file

from arena import chat_session
from core.errors import UserError
from inference import cache
from merging import parse_config
from merging.merge import merge_in_memory
from ui import chat_actions, merge_tab, t_preview

pytestmark = pytest.mark.usefixtures("isolated_app")


def test_in_memory_merge_equals_the_merge_on_disk(tiny_models, tmp_path):
    a, b = tiny_models("llama", 1), tiny_models("llama", 2)
    output = merge_tab.merge(tiny_yaml(a, b, "[0, 0.5, 1]"), "disk", False, merge_tab.MergeSession(), progress=lambda *x, **k: None)[2]
    in_memory = merge_in_memory(parse_config(tiny_yaml(a, b, "[0, 0.5, 1]")), 10**9)
    on_disk = load_file(f"{output}/model.safetensors")
    assert in_memory.keys() == on_disk.keys() and all(torch.equal(in_memory[k], on_disk[k]) for k in on_disk)
    with pytest.raises(UserError, match="in-memory previews stop at"):
        merge_in_memory(parse_config(tiny_yaml(a, b)), 1000)


def test_preview_swaps_the_merged_pane_and_frees_the_previous_one(tiny_models):
    a, b = str(tiny_models("llama", 1)), str(tiny_models("llama", 2))
    state = chat_session.ChatSession()
    output = merge_tab.merge(tiny_yaml(a, b), "merged", False, merge_tab.MergeSession(), progress=lambda *x, **k: None)[2]
    first, message = t_preview.preview_t("0", "0", "0", output, "bf16", state)  # t = 0 everywhere: parent A
    assert "Re-merged in memory in" in message and "swap:" in message
    preview = cache.MODELS.get(first, "bf16")
    parent_a = load_file(f"{a}/model.safetensors")
    assert torch.equal(preview.model.state_dict()["model.layers.1.mlp.up_proj.weight"], parent_a["model.layers.1.mlp.up_proj.weight"])
    second, _ = t_preview.preview_t("1", "1", "1", output, "bf16", state)
    assert [m.name for m in cache.MODELS.loaded()] == [second]  # the first preview was freed
    # The Merged pane now answers with the t = 1 preview: parent B's weights, so parent B's greedy reply.
    final = list(chat_actions.chat("hello", "", 0.0, 1.0, 6, 0, second, "", b, True, False, True, "bf16", "bf16", state))[-1]
    (merged_chat, _, b_chat), (merged_stats, _, _) = unpack(final)
    assert "tokens" in merged_stats and merged_chat[-1]["content"] == b_chat[-1]["content"]


def test_preview_needs_a_merge_made_here(tiny_models):
    with pytest.raises(gr.Error, match="not a merge made here"):
        t_preview.preview_t("0.5", "0.5", "0.5", str(tiny_models("llama", 1)), "bf16", chat_session.ChatSession())


def test_the_preview_fields_start_from_the_loaded_merge_s_own_curves(tiny_models):
    a, b = str(tiny_models("llama", 1)), str(tiny_models("llama", 2))
    output = merge_tab.merge(tiny_yaml(a, b, "[0, 0.3, 1]"), "curved", False, merge_tab.MergeSession(), progress=lambda *x, **k: None)[2]
    assert t_preview.preview_curves(output) == ("0, 0.3, 1", "0, 0.3, 1", "0, 0.3, 1")  # not the V-shape the page starts with
    for other in (f"{output}#t=self_attn[0] mlp[0] default[0]", a, "org/model", ""):
        assert t_preview.preview_curves(other) == (gr.skip(),) * 3
