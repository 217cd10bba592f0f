"""The offline demo parent: context distillation of a persona, cached."""

import json

import torch
from safetensors.torch import load_file

from inference.demo_parent import DistillSettings, build_demo_parent
from ui import merge_tab


def test_persona_is_distilled_into_a_cached_model(tiny_models, monkeypatch):
    base = tiny_models("llama", 1)
    settings = DistillSettings(questions=("What is the capital of France?", "Name a color."), answer_tokens=6, epochs=2,
                               learning_rate=1e-3)
    stages = []
    folder = build_demo_parent(str(base), settings, on_progress=lambda stage, done, total: stages.append((stage, done, total)))
    assert ("teacher answers", 2, 2) in stages and ("fine-tuning", 4, 4) in stages
    answers = json.loads((folder / "distillation.json").read_text())["answers"]
    assert all(a.startswith("Arr!") for a in answers.values())
    before, after = load_file(base / "model.safetensors"), load_file(folder / "model.safetensors")
    assert not torch.equal(before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"])
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert build_demo_parent(str(base), settings) == folder  # cached: not rebuilt
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    monkeypatch.setenv("SLERP_ARENA_OUTPUTS", str(folder.parent / "no-outputs"))
    assert str(folder) in merge_tab.known_models()  # offered as a parent in the Merge tab
