"""The app's handlers as plain functions, then the launched app through gradio_client."""

import zipfile

import pytest
from gradio_client import Client
from helpers import tiny_yaml, unpack

import app
from arena import chat_session
from core import places
from merging.form import PRESETS, MergeForm
from testkit.app_process import text_of
from ui import chat_actions, merge_tab

pytestmark = pytest.mark.usefixtures("isolated_app")


def test_an_unreadable_parent_a_leaves_the_plot_on_parent_bs_layers(tiny_models, tmp_path):
    b = str(tiny_models("llama", 2))
    _, layers = merge_tab.describe_parents(b, b)
    text, shown = merge_tab.describe_parents(str(tmp_path / "no-such-model"), b)
    assert "Parent A (base): ⚠️" in text and shown == layers > 0  # not 0, which would draw a guessed layer count


def test_form_and_yaml_stay_in_sync_both_ways(tiny_models):
    a, b = str(tiny_models("llama", 1)), str(tiny_models("llama", 2))
    _, base_layers = merge_tab.describe_parents(a, b)
    yaml_text, plot, message, preset, _ = merge_tab.form_to_yaml(MergeForm(a, b, *PRESETS["LazyMergekit"]), base_layers)
    assert message == "" and "value: [0, 0.5, 0.3, 0.7, 1]" in yaml_text and preset == "LazyMergekit"
    rows = plot.value["data"]
    assert {row[2] for row in rows} == {"self_attn", "mlp", "everything else"} and len(rows) == 3 * 4  # 4 layers per curve
    pasted = yaml_text.replace("value: 0.5", "value: 0.25").replace("bfloat16", "float16")
    filled = merge_tab.yaml_to_form(pasted)
    assert MergeForm(*filled[:8]) == MergeForm(a, b, "0, 0.5, 0.3, 0.7, 1", "1, 0.5, 0.7, 0.3, 0", "0.25", 0, 0, "float16")
    assert (filled.message, filled.preset, filled.plan) == ("", "custom", "")


def test_bad_form_and_bad_yaml_show_one_line_errors(tiny_models):
    a = str(tiny_models("llama", 1))
    message = merge_tab.form_to_yaml(MergeForm(a, a, "0, oops")).message
    assert message.startswith("⚠️ t (self_attn): 'oops' is not a number")
    assert merge_tab.yaml_to_form("merge_method: ties\n").message.startswith("⚠️ merge_method")


def test_parents_panel_shows_architecture_and_incompatibility(tiny_models):
    text, _ = merge_tab.describe_parents(str(tiny_models("llama", 1)), str(tiny_models("qwen2", 2)))
    assert "LlamaForCausalLM, 4 layers" in text and "Qwen2ForCausalLM" in text
    assert "model_type differs" in text
    assert "✅ compatible" in merge_tab.describe_parents(str(tiny_models("llama", 1)), str(tiny_models("llama", 2)))[0]


def test_merge_then_chat_with_merged_and_parents(tiny_models):
    a, b = str(tiny_models("llama", 1)), str(tiny_models("llama", 2))
    state, session = merge_tab.MergeSession(), chat_session.ChatSession()
    summary, card, output, heatmap = merge_tab.merge(tiny_yaml(a, b), "my merge!", False, state, progress=lambda *a, **k: None)
    assert "layer 3" in heatmap and "<table" in heatmap
    assert output.endswith("my-merge") and "Merged into" in summary and "slerp" in card
    assert output in merge_tab.known_models()
    refused = merge_tab.merge(tiny_yaml(a, b), "my merge!", False, state, progress=lambda *args, **kwargs: None)
    assert "already exists" in refused[0] and "tick “overwrite”" in refused[0] and "--overwrite" not in refused[0]
    assert refused[1:] == ("", "", "")  # one visitor cannot silently replace a merge; the old result is cleared
    assert merge_tab.merge(tiny_yaml(a, b, "0.2"), "my merge!", True, state, progress=lambda *args, **kwargs: None)[2] == output
    merged_ref, chat_a, chat_b, _, notice = app.chat_with_merge(output)
    assert (chat_a, chat_b) == (a, b)  # the parents its config names, whatever the form says now
    assert notice == ""  # the first-chat notice described another merge
    updates = list(chat_actions.chat("hello", "", 0.0, 1.0, 8, 0, merged_ref, chat_a, chat_b, True, True, True, "int8", "bf16", session))
    (merged_chat, a_chat, b_chat), (merged_stats, a_stats, b_stats) = unpack(updates[-1])
    for history in (merged_chat, a_chat, b_chat):
        assert [m["role"] for m in history] == ["user", "assistant"] and history[1]["content"]
    assert "int8" in merged_stats and "bf16" in a_stats and "tok/s" in b_stats
    # A pane switched off keeps quiet; regenerate answers the last message again.
    updates = list(chat_actions.chat("again", "", 0.0, 1.0, 8, 0, merged_ref, chat_a, chat_b, True, False, True, "int8", "bf16", session))
    histories, _ = unpack(updates[-1])
    assert len(histories[1]) == 2 and len(histories[0]) == 4
    histories, _ = unpack(list(chat_actions.regenerate_last("", 0.0, 1.0, 8, 0, True, session))[-1])
    assert len(histories[0]) == 4 and histories[0][-1]["role"] == "assistant"
    histories, _ = unpack(chat_actions.clear_chat(session))
    assert histories == [[], [], []]


def test_merge_errors_are_shown_not_crashes(tiny_models):
    a = str(tiny_models("llama", 1))
    bad_method = merge_tab.merge(tiny_yaml(a, a).replace("slerp", "ties"), "x", False, merge_tab.MergeSession(),
                                 progress=lambda *a, **k: None)
    assert bad_method[0].startswith("### ❌ Merge failed\nmerge_method:")
    assert "output name: empty" in merge_tab.merge(tiny_yaml(a, a), "  ", False, merge_tab.MergeSession(), progress=lambda *a, **k: None)[0]


def test_cancel_stops_a_merge_and_leaves_nothing(tiny_models):
    state = merge_tab.MergeSession()
    a, b = str(tiny_models("llama", 1)), str(tiny_models("llama", 2))

    def cancel_on_first_tensor(fraction, desc=""):
        merge_tab.cancel_merge(state)

    assert merge_tab.merge(tiny_yaml(a, b), "cancelled", False, state, progress=cancel_on_first_tensor) == (
        "### ⏹ Cancelled — nothing was written", "", "", "")
    assert not places.outputs_root().exists() or not any(places.outputs_root().iterdir())


def test_model_errors_appear_in_their_pane(tiny_models, tmp_path):
    a = str(tiny_models("llama", 1))
    session = chat_session.ChatSession()
    missing = str(tmp_path / "missing")
    final = list(chat_actions.chat("hello", "", 0.0, 1.0, 8, 0, missing, a, "", True, True, False, "bf16", "bf16", session))[-1]
    (merged_chat, a_chat, _), (merged_stats, a_stats, _) = unpack(final)
    assert merged_chat == [] and "not a directory" in merged_stats
    assert a_chat[-1]["content"] and "tok/s" in a_stats


def test_offline_push_gives_a_clear_message(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    (tmp_path / "config.json").write_text("{}")
    message, archive = merge_tab.push_to_hub(str(tmp_path), "me/merge", "token")
    assert "offline" in message and "download the zip" in message and archive.endswith(".zip")
    assert zipfile.ZipFile(archive).namelist() == ["config.json"]
    assert merge_tab.push_to_hub(str(tmp_path), "not a repo", "token") == (
        "⚠️ repo: 'not a repo' is not a Hub repo id — write it as user/name", None)


def test_gradio_client_merges_then_streams_a_chat(tiny_models, served_app):
    a, b = str(tiny_models("qwen2", 1)), str(tiny_models("qwen2", 2))
    client = Client(served_app, verbose=False)
    summary, card, output, _ = client.predict(tiny_yaml(a, b, "[0, 0.5, 1]"), "client-merge", False, api_name="/merge")
    assert "Merged into" in summary and output.endswith("client-merge")
    job = client.submit("hello", "", 0.0, 1.0, 12, 0, output, a, b, True, True, True, "fp8", "bf16", api_name="/chat")
    updates = list(job)
    assert len(updates) > 2  # streamed, not one final answer
    final = job.outputs()[-1]
    chats, stats = final[:3], final[3:6]
    for history in chats:  # random tiny models may answer in whitespace: count tokens, not letters
        assert [m["role"] for m in history] == ["user", "assistant"] and text_of(history[0]) == "hello"
    assert "fp8" in stats[0] and all("12 tokens" in s and "tok/s" in s for s in stats)


def test_start_up_builds_the_kernels_in_its_background_thread(monkeypatch):
    """Not in a visitor's request: prepare_default_model (app start-up's thread) leaves both
    engines' kernels built, or marked unavailable (SLERP_ARENA_KERNELS=torch, no compiler)."""
    from inference import cpu_kernels
    from merging import slerp_kernel

    monkeypatch.setattr(app, "resolve_model", lambda ref: None)
    monkeypatch.setattr(cpu_kernels, "_kernel", None)
    monkeypatch.setattr(slerp_kernel, "_lib", None)
    app.prepare_default_model()
    assert cpu_kernels._kernel is not None and slerp_kernel._lib is not None
