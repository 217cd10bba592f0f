"""The offline demo parent, built for real from the bundled SmolLM2: a pirate voice on
the held-out prompts, the original's knowledge kept, cached; and the t-sweep on the demo
pair goes from the original to the pirate."""

from conftest import ROOT

import sweep
from core.sources import DEFAULT_MODEL
from inference.demo_parent import build_demo_parent, demo_report
from inference.prompt_set import DEMO_PROMPTS, read_prompts, split_halves
from merging.form import PRESETS, MergeForm, config_from_form
from ui import defaults


def test_the_demo_parent_speaks_like_a_pirate_about_the_question_asked(demo_parent, monkeypatch):
    folder, stages, seconds = demo_parent
    report = demo_report(folder)
    parent, original = report["demo parent"], report["original"]
    assert parent.n >= 15 and parent.persona >= 0.8 and parent.on_topic >= 0.8, parent.line()
    assert parent.loops == 0 and parent.profane == 0, parent.line()
    assert original.persona <= 0.1, original.line()
    finished = {stage for stage, done, total in stages if done == total}
    assert finished == {"teacher answers", "fine-tuning", "report: original", "report: demo parent"}
    print(f"demo parent built in {seconds:.0f} s; held-out: original {original.line()}; demo parent {parent.line()}")
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert build_demo_parent() == folder and (folder / "model.safetensors").stat().st_mtime_ns == stamp  # cached
    monkeypatch.setenv("SLERP_ARENA_OUTPUTS", str(ROOT / "no-such-outputs"))
    assert str(folder) in defaults.known_models()  # offered as a parent in the Merge tab


def test_the_t_sweep_on_the_demo_pair_moves_from_the_original_to_the_pirate(demo_parent):
    folder, _, _ = demo_parent
    config = config_from_form(MergeForm(DEFAULT_MODEL, str(folder), *PRESETS["constant 0.5"]))
    prompts = split_halves(read_prompts(DEMO_PROMPTS, "prompts"))[1][:5]
    curve = [p.resemblance_b for p in sweep.t_sweep(config, prompts, (0.0, 0.5, 1.0), max_new_tokens=24)]
    assert curve[0] <= 0.2 and curve[-1] >= 0.8 and curve[0] <= curve[1] <= curve[2], curve
