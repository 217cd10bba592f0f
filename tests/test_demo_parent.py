"""The offline demo parent in use (its build: test_builds.py): offered as a parent, and
the t-sweep on the demo pair goes from the original to the pirate."""

from core.places import ROOT
from core.sources import DEFAULT_MODEL
from evaluation import defaults, sweep
from evaluation.prompt_set import DEMO_PROMPTS, read_prompts, split_halves
from merging.form import PRESETS, MergeForm, config_from_form


def test_the_demo_parent_is_offered_as_a_parent(demo_parent, monkeypatch):
    monkeypatch.setenv("SLERP_ARENA_OUTPUTS", str(ROOT / "no-such-outputs"))
    assert str(demo_parent) in defaults.known_models()


def test_the_t_sweep_on_the_demo_pair_moves_from_the_original_to_the_pirate(demo_parent):
    folder = demo_parent
    config = config_from_form(MergeForm(DEFAULT_MODEL, str(folder), *PRESETS["constant 0.5"]))
    prompts = split_halves(read_prompts(DEMO_PROMPTS, "prompts"))[1][:5]
    curve = [p.resemblance_b for p in sweep.t_sweep(config, prompts, (0.0, 0.5, 1.0), max_new_tokens=24)]
    assert curve[0] <= 0.2 and curve[-1] >= 0.8 and curve[0] <= curve[1] <= curve[2], curve
