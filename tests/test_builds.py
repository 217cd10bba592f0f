"""What a new machine builds once, built here from scratch in an empty cache (the
`fresh_builds` fixture): the bundled model's conversion, the C kernels, and the demo
parent, which must speak like a pirate about the question asked while the original does not."""

import shutil

from core import native
from core.sources import DEFAULT_MODEL, resolve_model
from evaluation.demo_parent import build_demo_parent, demo_report


def test_a_new_machine_converts_the_bundled_model_and_builds_the_kernels(fresh_builds):
    print(f"from scratch: conversion {fresh_builds.seconds['conversion']:.1f} s, kernels {fresh_builds.seconds['kernels']:.1f} s")
    folder = resolve_model(DEFAULT_MODEL)  # the machine cache now holds what the fresh build made
    assert (folder / "config.json").is_file() and "quantization_config" not in (folder / "config.json").read_text()
    if native.chosen_target() and (shutil.which("cc") or shutil.which("gcc")):
        assert fresh_builds.kernels == {"cpu": True, "slerp": True}


def test_the_demo_parent_speaks_like_a_pirate_about_the_question_asked(fresh_builds):
    folder = fresh_builds.demo_parent
    report = demo_report(folder)
    parent, original = report["demo parent"], report["original"]
    print(f"demo parent built in {fresh_builds.seconds['demo parent']:.0f} s; held-out: original {original.line()}; "
          f"demo parent {parent.line()}")
    assert parent.n >= 15 and parent.persona >= 0.8 and parent.on_topic >= 0.8, parent.line()
    assert parent.loops == 0 and parent.profane == 0, parent.line()
    assert original.persona <= 0.1, original.line()
    finished = {stage for stage, done, total in fresh_builds.stages if done == total}
    assert finished == {"teacher answers", "fine-tuning", "report: original", "report: demo parent"}
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert build_demo_parent() == folder and (folder / "model.safetensors").stat().st_mtime_ns == stamp  # found, not built again
