"""Divergence map (analyze) and dry-run plan."""

import math
import re

from helpers import run_main, slices_config, tiny_yaml
from safetensors.torch import load_file

from merging import parse_config
from merging.__main__ import main
from merging.analyze import divergence, divergence_grid
from merging.checkpoint import open_checkpoint
from merging.dry_run import dry_run
from merging.form import form_from_yaml
from ui import merge_tab
from ui.merge_form import FormRequest


def test_analyze_prints_theta_equal_to_arccos_of_the_cosine(tiny_models, capsys):
    a, b = tiny_models("mistral", 1), tiny_models("mistral", 2)
    code, out, err = run_main(main, ["analyze", a, b], capsys)
    assert code == 0, err
    rows = {m[1]: (m[2], float(m[3])) for m in re.finditer(r"^(\S+)\s+(\S+)\s+([\d.]+)$", out, re.MULTILINE)}
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert set(rows) == set(wa)
    for name, (layer, theta) in rows.items():
        x, y = wa[name].double().reshape(-1), wb[name].double().reshape(-1)
        expected = math.degrees(math.acos(max(-1.0, min(1.0, float(x @ y / (x.norm() * y.norm()))))))
        assert abs(theta - expected) < 1e-3, name
        assert layer == (name.split(".")[2] if name.startswith("model.layers.") else "-")


def test_divergence_of_a_model_with_itself_is_zero_and_the_grid_has_components(tiny_models):
    a = open_checkpoint("a", tiny_models("llama", 1))
    angles = divergence(a, a)
    assert all(x.theta_degrees < 1e-3 for x in angles)
    columns, rows = divergence_grid(divergence(a, open_checkpoint("b", tiny_models("llama", 2))))
    assert columns == ["q", "k", "v", "o", "gate", "up", "down", "norms", "embeddings"]
    assert [r[0] for r in rows] == ["layer 0", "layer 1", "layer 2", "layer 3", "outside layers"]
    assert all(v is None or 0 <= v <= 180 for _, values in rows for v in values)


def test_dry_run_writes_nothing_and_reports_sizes_time_and_warnings(tiny_models, tmp_path, capsys):
    base, other = tiny_models("qwen2", 1), tiny_models("qwen2", 2)
    summary = dry_run(parse_config(slices_config(base, other, layers=(1, 3))))
    weights = load_file(base / "model.safetensors")
    kept = sum(t.numel() * 2 for n, t in weights.items() if not re.match(r"model\.layers\.[03]\.", n))
    assert summary.output_bytes == kept and summary.num_layers == 2
    assert summary.seconds_estimate > 0 and summary.measured_bytes_per_s > 0 and summary.peak_ram_bytes > 0
    assert any("tied embeddings" in w for w in summary.warnings) and any("sub-slice" in w for w in summary.warnings)
    config = tmp_path / "c.yml"
    config.write_text(slices_config(base, other))
    code, out, _ = run_main(main, [config, tmp_path / "out", "--dry-run"], capsys)
    assert code == 0 and "estimated peak RAM" in out and "estimated time" in out
    assert not (tmp_path / "out").exists()


def test_app_plan_and_divergence_map(tiny_models):
    a, b = str(tiny_models("llama", 1)), str(tiny_models("llama", 2))
    text = tiny_yaml(a, b)
    form = form_from_yaml(text)  # the form the page shows for this YAML
    assert "estimated time" in merge_tab.plan(FormRequest(text, form))
    assert merge_tab.plan(FormRequest("merge_method: ties", form)).startswith("⚠️ merge_method")
    heatmap = merge_tab.divergence_map(FormRequest(text, form), progress=lambda *args, **kwargs: None)
    assert "<table" in heatmap and "layer 0" in heatmap and "embeddings" in heatmap
    assert "Colours span this map's own range" in heatmap
