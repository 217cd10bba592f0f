"""t-sweep: at t = 0 the merge is parent A and prefers A's replies, at t = 1 it is B."""

import re

from helpers import peaked, run_main, tiny_yaml

from evaluation import sweep
from evaluation.prompt_set import PromptCase
from merging import parse_config

PROMPTS = [PromptCase(({"role": "user", "content": text},)) for text in
           ("hello", "What is the capital of France?", "how are you?", "SLERP merges two models")]


def test_resemblance_to_b_goes_from_a_to_b_along_t(tiny_models, tmp_path):
    a, b = peaked(tiny_models("llama", 1), tmp_path / "a"), peaked(tiny_models("llama", 2), tmp_path / "b")
    stages = []
    points = sweep.t_sweep(parse_config(tiny_yaml(a, b)), PROMPTS, (0.0, 0.5, 1.0), max_new_tokens=12,
                           on_progress=lambda stage, done, total: stages.append((done, total)))
    curve = [p.resemblance_b for p in points]
    assert curve[0] <= 0.2 and curve[-1] >= 0.8 and curve == sorted(curve), curve
    assert points[0].gap < 0 < points[-1].gap and all(p.n == len(PROMPTS) for p in points)
    assert stages[-1] == (stages[-1][1], stages[-1][1])  # progress reaches its total


def test_scaled_curve_keeps_the_config_shape(tiny_models):
    config = parse_config(tiny_yaml(tiny_models("llama", 1), tiny_models("llama", 2), "[0, 1, 0.5]"))
    assert sweep.config_at(config, 0.5, scale_curve=True).t_rules[0].value == (0.0, 0.5, 0.25)
    assert sweep.config_at(config, 0.5, scale_curve=False).t_rules[0].value == (0.5,)


def test_cli_prints_one_line_per_t(tiny_models, tmp_path, capsys):
    config, prompts = tmp_path / "c.yml", tmp_path / "p.txt"
    config.write_text(tiny_yaml(tiny_models("llama", 1), tiny_models("llama", 2)))
    prompts.write_text("# comment\nhello\nhow are you?\n")
    code, out, _ = run_main(sweep.main, [config, "--prompts", prompts, "--grid", "0,1", "--max-new-tokens", "8"], capsys)
    assert code == 0 and len(re.findall(r"^t=\d\.\d\d resemblance_b=\d\.\d\d gap=[+-]\d+\.\d\d n=2$", out, re.M)) == 2
    code, _, err = run_main(sweep.main, [config, "--prompts", prompts, "--grid", "0,2"], capsys)
    assert code == 2 and err.startswith("error: --grid")
