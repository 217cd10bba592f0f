"""The Merge tab's handlers as plain functions: the form, the YAML and the plot are one
state, and the results panel is a state machine (idle, running, done, failed, cancelled)."""

from pathlib import Path

import gradio as gr
import pytest

from core import places
from merging.form import PRESETS, MergeForm
from ui import merge_tab
from ui.merge_form import FormRequest

pytestmark = pytest.mark.usefixtures("isolated_app")
NO_PROGRESS = {"progress": lambda *args, **kwargs: None}


def form_of(a, b, attn="0.5", mlp="0.5", default="0.5", start=0, end=0, dtype="bfloat16"):
    return MergeForm(str(a), str(b), attn, mlp, default, start, end, dtype)


@pytest.mark.parametrize(("start", "end", "message"), [
    (-3, 0, "first layer: -3 is not a layer number — type a whole number of 0 or more, such as 0"),
    (2.5, 8, "first layer: 2.5 is not a layer number — type a whole number of 0 or more, such as 0"),  # not rounded to 2
    (0, None, "end layer: empty is not a layer number — type a whole number of 0 or more, such as 0"),
    (4, 0, "layer range: first layer 4 with end layer 0 (all layers) — set the end layer, or first layer 0"),
    (6, 6, "layer range: [6, 6] is empty — use start < end, or end 0 for all layers"),
])
def test_a_layer_field_that_is_no_layer_number_is_refused_in_one_line(tiny_models, start, end, message):
    shown = merge_tab.form_to_yaml(form_of(tiny_models("llama", 1), tiny_models("llama", 2), start=start, end=end))
    assert shown.message == f"⚠️ {message}" and shown.yaml_text == f"# invalid: {message}\n"


def test_whole_layer_numbers_typed_as_floats_make_a_slice(tiny_models):
    shown = merge_tab.form_to_yaml(form_of(tiny_models("llama", 1), tiny_models("llama", 2), start=1.0, end=3.0))
    assert shown.message == "" and shown.yaml_text.count("layer_range: [1, 3]") == 2


def test_an_invalid_field_leaves_nothing_valid_on_screen_and_nothing_runs(tiny_models):
    a, b = tiny_models("llama", 1), tiny_models("llama", 2)
    stale_yaml = merge_tab.form_to_yaml(form_of(a, b, default="1")).yaml_text  # the "1" keystroke of "1.5"
    assert "value: 1\n" in stale_yaml
    form = form_of(a, b, default="1.5")
    shown_config = merge_tab.form_to_yaml(form)
    yaml_text, plot, message = shown_config.yaml_text, shown_config.plot, shown_config.message
    assert yaml_text == "# invalid: t (everything else): 1.5 is outside [0, 1] — use numbers between 0 (base_model) and 1 (the other)\n"
    assert plot.value is None and "no valid config" in plot.caption
    assert message == "⚠️ " + yaml_text.removeprefix("# invalid: ").strip() and shown_config.preset == "custom" and shown_config.plan == ""
    # Merge, Plan and Divergence refuse with the field's message, whichever YAML the page sends
    # (the invalid marker, or the stale YAML of a click that beat the form's update).
    for shown in (yaml_text, stale_yaml):
        started = merge_tab.start_merge(FormRequest(shown, form))
        assert started == ("### ❌ Merge failed\n" + message.removeprefix("⚠️ "), "", "", "", "")
        assert merge_tab.merge(shown, "never", False, merge_tab.MergeSession(), started.approved, **NO_PROGRESS) == (gr.skip(),) * 4
        assert merge_tab.plan(FormRequest(shown, form)) == message
        assert merge_tab.divergence_map(FormRequest(shown, form), **NO_PROGRESS) == message
    assert not places.outputs_root().exists()
    assert merge_tab.start_merge(FormRequest("0, oops", form_of(a, b, attn="0, oops"))).approved == ""


def test_a_yaml_that_lags_behind_a_valid_form_is_refused(tiny_models):
    a, b = tiny_models("llama", 1), tiny_models("llama", 2)
    stale_yaml = merge_tab.form_to_yaml(form_of(a, b, default="0.3")).yaml_text
    started = merge_tab.start_merge(FormRequest(stale_yaml, form_of(a, b, default="0.35")))
    assert "form: the YAML box does not show the form's values yet" in started.result and started.approved == ""
    # Spelling does not matter: "0.5,1" and "0.5, 1" are the same gradient.
    current = merge_tab.form_to_yaml(form_of(a, b, default="0.5, 1")).yaml_text
    assert merge_tab.start_merge(FormRequest(current, form_of(a, b, default="0.5,1"))).approved == current


def test_the_config_that_runs_is_byte_for_byte_the_yaml_shown(tiny_models):
    a, b = tiny_models("llama", 1), tiny_models("llama", 2)
    form = form_of(a, b, *PRESETS["LazyMergekit"], start=1, end=3)
    shown = merge_tab.form_to_yaml(form).yaml_text
    started = merge_tab.start_merge(FormRequest(shown, form))
    assert started == merge_tab.StartedMerge(result=merge_tab.RUNNING, card="", output_path="", heatmap="", approved=shown)
    approved = started.approved
    summary, card, output, heatmap = merge_tab.merge(shown, "exact", False, merge_tab.MergeSession(), approved, **NO_PROGRESS)
    assert summary.startswith("### ✅ Merged into") and (Path(output) / "mergekit_config.yml").read_text() == shown
    # The YAML changed between the approval and the run (another edit landed): refused.
    changed = merge_tab.merge(shown.replace("0.7", "0.8"), "other", False, merge_tab.MergeSession(), approved, **NO_PROGRESS)
    assert changed[0].startswith("### ❌ Merge failed\nform: the YAML changed")


def test_the_preset_follows_fields_and_pasted_yaml(tiny_models):
    a, b = tiny_models("llama", 1), tiny_models("llama", 2)
    for name, gradients in PRESETS.items():
        shown = merge_tab.form_to_yaml(form_of(a, b, *gradients)).yaml_text
        assert merge_tab.form_to_yaml(form_of(a, b, *gradients)).preset == name
        assert merge_tab.yaml_to_form(shown).preset == name  # pasted YAML selects the preset it is
    v_yaml = merge_tab.form_to_yaml(form_of(a, b, *PRESETS["V-shape"])).yaml_text
    assert merge_tab.yaml_to_form(v_yaml.replace("[0, 0.5, 1, 0.5, 0]", "[0, 0.5, 1, 0.5, 0.2]", 1)).preset == "custom"
    assert merge_tab.apply_preset("custom") == (gr.skip(),) * 3  # choosing "custom" keeps the fields


def test_plot_has_a_line_per_filter_and_shows_a_sub_slice_at_its_real_layers(tiny_models):
    a, b = tiny_models("llama", 1), tiny_models("llama", 2)
    plot = merge_tab.form_to_yaml(form_of(a, b, "0, 1", "1, 0", "0.5", start=1, end=3), 4).plot
    rows = plot.value["data"]
    by_filter = {f: [(layer, t) for layer, t, g in rows if g == f] for f in ("self_attn", "mlp", "everything else")}
    assert by_filter == {"self_attn": [(1, 0.0), (2, 1.0)], "mlp": [(1, 1.0), (2, 0.0)], "everything else": [(1, 0.5), (2, 0.5)]}
    assert plot.x_lim == [0, 3]  # the base's 4 layers on x; layers 0 and 3 are outside the slice
    assert plot.y_title == "t (0 = parent A, 1 = parent B)"
    assert plot.caption == f"t = 0: {a.name} (parent A, base) · t = 1: {b.name} (parent B)"
    # A pasted invalid YAML keeps the text, empties the plot, and clears a stale plan.
    filled = merge_tab.yaml_to_form("merge_method: ties\n")
    assert filled.plot.value is None and filled.message.startswith("⚠️ merge_method") and filled.plan == ""


def test_every_run_clears_the_last_result_and_failures_and_cancel_show_in_the_panel(tiny_models):
    a, b = tiny_models("llama", 1), tiny_models("llama", 2)
    form = form_of(a, b)
    shown = merge_tab.form_to_yaml(form).yaml_text
    session = merge_tab.MergeSession()
    done = merge_tab.merge(shown, "first", False, session, merge_tab.start_merge(FormRequest(shown, form)).approved, **NO_PROGRESS)
    assert done[0].startswith("### ✅") and done[1] and done[2] and "<table" in done[3]
    # The second run fails (same name, overwrite off): its panel holds only the error.
    running = merge_tab.start_merge(FormRequest(shown, form))
    assert running[:4] == (merge_tab.RUNNING, "", "", "")
    assert merge_tab.merge(shown, "first", False, session, running.approved, **NO_PROGRESS) == (
        "### ❌ Merge failed\noutput_dir: 'outputs/first' already exists — choose another output name, "
        "or tick “overwrite”", "", "", "")

    def cancel_at_once(fraction, desc=""):
        merge_tab.cancel_merge(session)

    assert merge_tab.merge(shown, "second", False, session, **{"progress": cancel_at_once}) == (merge_tab.CANCELLED, "", "", "")
    assert merge_tab.CANCELLED == "### ⏹ Cancelled — nothing was written"
    assert sorted(p.name for p in places.outputs_root().iterdir()) == ["first"]
    # The next run starts afresh: Cancel from the last run does not stop it.
    assert merge_tab.merge(shown, "third", False, session, **NO_PROGRESS)[0].startswith("### ✅")


def test_divergence_map_colours_span_its_own_range():
    html = merge_tab.heatmap_html(["q", "k"], [("layer 0", [0.1, 0.9]), ("layer 1", [0.5, None])], "θ")
    assert "rgb(255,255,255)" in html and "rgb(255,51,51)" in html  # 0.1° is white, 0.9° deep red
    assert "0.10" in html and "0.90" in html and "0.10° (white) to 0.90° (red)" in html


def test_the_model_card_renders_as_a_page_with_its_front_matter_in_a_yaml_block():
    card = "---\nbase_model:\n- org/a\ntags:\n- merge\n---\n\n# my-merge\n\nText."
    page = merge_tab.card_page(card)
    assert page.startswith("```yaml\nbase_model:\n- org/a\ntags:\n- merge\n```\n") and page.endswith("# my-merge\n\nText.")
    assert merge_tab.card_page("# no front matter") == "# no front matter"


def test_the_max_ram_box_reaches_the_merge_and_the_plan(tiny_models, monkeypatch):
    a, b = tiny_models("llama", 1), tiny_models("llama", 2)
    form = form_of(a, b)
    shown = merge_tab.form_to_yaml(form).yaml_text
    budgets = []
    real = merge_tab.run_merge
    monkeypatch.setattr(merge_tab, "run_merge", lambda *args, **kwargs: (budgets.append(kwargs["max_ram"]), real(*args, **kwargs))[1])
    approved = merge_tab.start_merge(FormRequest(shown, form)).approved
    assert merge_tab.merge(shown, "budget", False, merge_tab.MergeSession(), approved, "300MB", **NO_PROGRESS)[0].startswith("### ✅")
    assert merge_tab.merge(shown, "default", False, merge_tab.MergeSession(), approved, "", **NO_PROGRESS)[0].startswith("### ✅")
    assert budgets == [300 * 10**6, 128 * 10**6]
    assert "RAM budget: 300 MB" in merge_tab.plan(FormRequest(shown, form), "300MB")
    refused = merge_tab.merge(shown, "never", False, merge_tab.MergeSession(), approved, "lots", **NO_PROGRESS)
    assert refused == ("### ❌ Merge failed\nMax RAM: 'lots' is not a size — write e.g. 128MB, 512MB or 2GB", "", "", "")
    assert merge_tab.plan(FormRequest(shown, form), "10MB") == "⚠️ Max RAM: 10 MB is less than the 61 MB a merge needs — use 61MB or more"
    assert "ℹ️ Max RAM was empty: the default, 128 MB." in merge_tab.plan(FormRequest(shown, form), "")
    assert "is more than this machine's" in merge_tab.plan(FormRequest(shown, form), "1000000GB")
    assert "is more than this machine's" not in merge_tab.plan(FormRequest(shown, form), "300MB")
    assert len(budgets) == 2 and not (places.outputs_root() / "never").exists()


def test_an_edit_drops_the_plan_and_a_failure_but_keeps_a_finished_merge():
    assert merge_tab.after_edit("### ❌ Merge failed\nMax RAM: 'lots' is not a size") == ("", merge_tab.IDLE)
    done = "### ✅ Merged 272 tensors"
    assert merge_tab.after_edit(done) == ("", done)
