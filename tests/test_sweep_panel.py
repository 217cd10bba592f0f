"""The Merge tab's t-sweep as plain handlers: it runs the YAML on screen, draws resemblance
to B against t with the parents at the ends, refuses a bad grid in one line, and Cancel
stops it; no old result stays on screen while a new sweep runs."""

import re

import gradio as gr
import pytest
from helpers import peaked

from merging.form import PRESETS, MergeForm
from ui import merge_tab, sweep_panel
from ui.context import CancelSession
from ui.merge_form import FormRequest

pytestmark = pytest.mark.usefixtures("isolated_app")


@pytest.fixture
def pair(tiny_models, tmp_path):
    return peaked(tiny_models("llama", 1), tmp_path / "tiny-a"), peaked(tiny_models("llama", 2), tmp_path / "tiny-b")


def shown(a, b, default="0.5"):
    """The form and the YAML box the page shows for it."""
    form = MergeForm(str(a), str(b), *PRESETS["constant 0.5"][:2], default)
    return merge_tab.form_to_yaml(form).yaml_text, form


def test_a_sweep_shows_resemblance_along_t_with_the_parents_at_the_ends(pair):
    yaml_text, form = shown(*pair)
    status, plot, rows, replies, request = sweep_panel.start_sweep(FormRequest(yaml_text, form), 3, "1, 0, 0.5", False)
    assert (status, plot, len(rows), replies) == (sweep_panel.RUNNING, "", 0, "")
    assert request.grid == (0.0, 0.5, 1.0) and request.prompts == tuple(sweep_panel.demo_prompts()[:3])
    stages = []
    status, plot, rows, replies = sweep_panel.run_sweep(request, CancelSession(), progress=lambda f, desc="": stages.append(desc))
    assert status.startswith("### ✅ t-sweep: 3 prompts × 3 values of t (one constant t everywhere)")
    assert stages[-1].endswith(" · 18/18")  # 2 × 3 parent replies + 3 × (merge + 3 scores)
    assert list(rows.columns) == ["t", "resemblance to B", "gap (B − A)", "n"] and list(rows["t"]) == ["0", "0.5", "1"]
    share = [int(v.rstrip("%")) for v in rows["resemblance to B"]]
    assert share[0] < share[-1] and list(rows["n"]) == [3, 3, 3]
    # The plot: one point per t, labelled ends, the parents named, the table's figures in the tooltips.
    assert plot.count("<circle") == 3 and ">Parent A</text>" in plot and ">Parent B</text>" in plot
    assert "◀ Parent A: tiny-a" in plot and "Parent B: tiny-b ▶" in plot
    assert f"t = 0 (parent A): resemblance to B {rows['resemblance to B'][0]}" in plot
    assert f"t = 1 (parent B): resemblance to B {rows['resemblance to B'][2]}" in plot
    assert replies.startswith("**The merge's greedy reply to “What is the capital of France?” at each t**")
    assert re.search(r"^- \*\*t = 0\*\* \(parent A\): ", replies, re.M) and "- **t = 0.5**: " in replies
    # The next sweep starts by emptying this result, before it waits for the device.
    again = sweep_panel.start_sweep(FormRequest(yaml_text, form), 3, "0, 1", True)
    assert again[0] == sweep_panel.RUNNING and again[1] == "" and again[2].empty and again[3] == ""


@pytest.mark.parametrize(("grid", "count", "default", "message"), [
    ("0, 2", 3, "0.5", "grid: '0, 2' is not a list of numbers in [0, 1] — write e.g. 0, 0.25, 0.5, 0.75, 1"),
    ("0, half, 1", 3, "0.5", "grid: '0, half, 1' is not a list of numbers in [0, 1] — write e.g. 0, 0.25, 0.5, 0.75, 1"),
    ("", 3, "0.5", "grid: '' is not a list of numbers in [0, 1] — write e.g. 0, 0.25, 0.5, 0.75, 1"),
    ("0, 1", 0, "0.5", "prompts: 0 is not between 1 and 38 — choose 1 to 38 prompts"),
    ("0, 1", 3, "1.5", "t (everything else): 1.5 is outside [0, 1] — use numbers between 0 (base_model) and 1 (the other)"),
])
def test_bad_input_refuses_in_one_line_naming_the_field_and_the_fix(pair, grid, count, default, message):
    yaml_text, form = shown(*pair, default)
    status, plot, rows, replies, request = sweep_panel.start_sweep(FormRequest(yaml_text, form), count, grid, False)
    assert status == f"### ❌ t-sweep failed\n{message}"
    assert (plot, len(rows), replies, request) == ("", 0, "", None)  # nothing stale stays under the error
    assert sweep_panel.run_sweep(None, CancelSession(), progress=lambda *a, **k: None) == (gr.skip(),) * 4


def test_the_yaml_on_screen_is_what_sweeps(pair):
    """A YAML that lags behind the form (a click racing an edit) is refused, as Merge refuses it."""
    stale, _ = shown(*pair, "0.3")
    _, form = shown(*pair, "0.35")
    status, *_, request = sweep_panel.start_sweep(FormRequest(stale, form), 3, "0, 1", False)
    assert "form: the YAML box does not show the form's values yet" in status and request is None


def test_cancel_stops_the_sweep_between_steps_and_shows_no_partial_result(pair):
    yaml_text, form = shown(*pair)
    request = sweep_panel.start_sweep(FormRequest(yaml_text, form), 3, "0, 0.5, 1", False)[-1]
    session, steps = CancelSession(), []

    def cancel_after_two(fraction, desc=""):
        steps.append(desc)
        if len(steps) == 2:
            sweep_panel.cancel(session)

    status, plot, rows, replies = sweep_panel.run_sweep(request, session, progress=cancel_after_two)
    assert status == "### ⏹ t-sweep cancelled — run it again to see a result" and (plot, len(rows), replies) == ("", 0, "")
    assert len(steps) == 2  # stopped at the next of its 18 steps
    # A new sweep is not stopped by the last Cancel.
    assert sweep_panel.run_sweep(request, session, progress=lambda *a, **k: None)[0].startswith("### ✅")
