import json
import re
import threading
from pathlib import Path

import pytest
import torch
from helpers import load_weights, slices_config, tiny_yaml, v_config
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.errors import UserError
from merging import MergeCancelled, parse_config, run_merge
from merging.config import load_config
from testkit.reference import bf16_ulps, reference_gradient, reference_slerp


def reference_t(rules: list[dict], name: str, x: float) -> float:
    for rule in rules:
        if "filter" not in rule or rule["filter"] in name:
            value = rule["value"]
            return reference_gradient(value if isinstance(value, list) else [value], x)
    raise AssertionError(name)


def assert_matches_reference(config_text: str, out: Path, base: Path, other: Path, layer_offset: int = 0) -> None:
    """Every output tensor equals mergekit's semantics, recomputed independently."""
    import yaml

    raw = yaml.safe_load(config_text)
    t = raw["parameters"]["t"]
    rules = t if isinstance(t, list) and isinstance(t[0], dict) else [{"value": t}]
    merged, a, b = load_weights(out), load_weights(base), load_weights(other)
    n = json.loads((out / "config.json").read_text())["num_hidden_layers"]
    expected_names = set()
    for k in a:
        m = re.match(r"model\.layers\.(\d+)\.", k)
        if m is None:
            expected_names.add(k)
        elif layer_offset <= int(m.group(1)) < layer_offset + n:
            expected_names.add(k.replace(f"layers.{m.group(1)}.", f"layers.{int(m.group(1)) - layer_offset}.", 1))
    assert set(merged) == expected_names
    for name, tensor in merged.items():
        match = re.match(r"model\.layers\.(\d+)\.", name)
        x = 0.0 if match is None else (int(match.group(1)) / (n - 1) if n > 1 else 1.0)
        source = name if match is None else name.replace(f"layers.{match.group(1)}.", f"layers.{int(match.group(1)) + layer_offset}.", 1)
        v0, v1 = a[source], b[source]
        expected = torch.from_numpy(reference_slerp(reference_t(rules, name, x), v0.float().numpy(), v1.float().numpy()))
        scale = float(torch.cat([v0.reshape(-1), v1.reshape(-1)]).float().abs().max())
        assert bf16_ulps(tensor, expected, scale) <= 1.0, name


def generates(folder: Path) -> str:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "hello"}], add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 4
    return tokenizer.decode(out[0])


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "gemma2"])
def test_lazymergekit_config_matches_reference_and_loads(arch, tiny_models, math_path, tmp_path):
    base, other = tiny_models(arch, 1), tiny_models(arch, 2)
    text = slices_config(base, other)
    result = run_merge(parse_config(text), tmp_path / "merged")
    assert_matches_reference(text, tmp_path / "merged", base, other)
    assert any(r.t not in (0.0, 1.0) and not r.lerp and r.theta_degrees > 1 for r in result.tensors)
    generates(tmp_path / "merged")


@pytest.mark.parametrize("arch", ["qwen2", "gemma2"])
def test_v_curve_with_instruct_as_base_matches_reference(arch, tiny_models, tmp_path):
    base, instruct = tiny_models(arch, 3), tiny_models(arch, 4)
    text = v_config(instruct, base)
    result = run_merge(parse_config(text), tmp_path / "merged")
    assert_matches_reference(text, tmp_path / "merged", instruct, base)
    # Tied embeddings: no lm_head in the parents, none invented in the merge.
    assert "lm_head.weight" not in load_weights(tmp_path / "merged")
    assert [r.t for r in result.tensors if r.name.endswith("layers.0.mlp.up_proj.weight")] == [0.0]
    generates(tmp_path / "merged")


def test_llama_merged_with_itself_returns_the_parent(tiny_models, tmp_path):
    parent = tiny_models("llama", 1)
    run_merge(parse_config(slices_config(parent, parent)), tmp_path / "self")
    merged, original = load_weights(tmp_path / "self"), load_weights(parent)
    assert merged.keys() == original.keys()
    assert all(torch.equal(merged[k], original[k]) for k in merged)


def test_identical_copies_in_different_folders_also_return_the_parent(tiny_models, tmp_path):
    import shutil

    parent = tiny_models("mistral", 1)
    copy = Path(shutil.copytree(parent, tmp_path / "copy"))
    run_merge(parse_config(slices_config(parent, copy)), tmp_path / "out")
    merged, original = load_weights(tmp_path / "out"), load_weights(parent)
    assert all(torch.equal(merged[k], original[k]) for k in merged)


@pytest.mark.parametrize("t, which", [(0.0, 1), (1.0, 2)])
def test_t0_gives_base_and_t1_gives_other_bit_exact(t, which, tiny_models, tmp_path):
    base, other = tiny_models("llama", 1), tiny_models("llama", 2)
    run_merge(parse_config(slices_config(base, other, t_yaml=f"  t: {t}")), tmp_path / "out")
    merged, expected = load_weights(tmp_path / "out"), load_weights(tiny_models("llama", which))
    assert all(torch.equal(merged[k], expected[k]) for k in merged)


def test_vocab_mismatch_keeps_common_rows_and_warns(tiny_models, tmp_path):
    base, other = tiny_models("llama", 1), tiny_models("llama", 2, vocab_size=352)
    result = run_merge(parse_config(slices_config(base, other, t_yaml="  t: 0.5")), tmp_path / "out")
    rows = load_weights(base)["model.embed_tokens.weight"].shape[0]
    assert result.vocab_size == rows and any("vocab sizes differ" in w for w in result.warnings)
    merged = load_weights(tmp_path / "out")
    assert merged["model.embed_tokens.weight"].shape[0] == rows == merged["lm_head.weight"].shape[0]
    assert json.loads((tmp_path / "out" / "config.json").read_text())["vocab_size"] == rows
    assert "vocab sizes differ" in (tmp_path / "out" / "README.md").read_text()
    generates(tmp_path / "out")


def test_other_shape_mismatch_is_an_error(tiny_models, tmp_path):
    narrow = tiny_models("llama", 2, intermediate=48)  # same hidden size, other MLP width
    with pytest.raises(UserError, match=r"tensor 'model\.layers\.0\.mlp\.\w+_proj\.weight' has shape \[\d+, \d+\] in base_model"):
        run_merge(parse_config(slices_config(tiny_models("llama", 1), narrow)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_blended_counts_agree_between_the_plan_and_the_merge(tiny_models, tmp_path):
    """One rule for "blended" (it once read 0 in the dry run and 39 of 39 after the merge)."""
    from merging.dry_run import dry_run

    parent, other = tiny_models("llama", 1), tiny_models("llama", 2)
    self_merge = parse_config(slices_config(parent, parent, t_yaml="  t: 0.5"))
    assert dry_run(self_merge).blended == run_merge(self_merge, tmp_path / "self").blended == 0  # nothing mixes
    pair = parse_config(slices_config(parent, other))
    planned, merged = dry_run(pair).blended, run_merge(pair, tmp_path / "pair").blended
    # LazyMergekit curves over 4 layers: t is 0 or 1 on the end layers of self_attn and mlp.
    assert planned == merged and 0 < merged < len(run_merge(pair, tmp_path / "again").tensors)


def test_the_parents_panel_and_the_merge_apply_one_compatibility_rule(tiny_models, tmp_path):
    from merging.inspect import compatibility_problems, inspect_model
    from testkit.tiny_models import build_tiny_model

    base = tiny_models("llama", 1)
    for other in (tiny_models("qwen2", 2), build_tiny_model(tmp_path / "wide", "llama", 3, hidden=64)):
        shown = compatibility_problems(inspect_model(str(base)), inspect_model(str(other)))
        with pytest.raises(UserError) as refused:
            run_merge(parse_config(slices_config(base, other)), tmp_path / "out")
        assert shown and shown[0].startswith(refused.value.problem)


def test_layer_range_sub_slice_gives_a_smaller_model(tiny_models, tmp_path):
    base, other = tiny_models("gemma2", 1), tiny_models("gemma2", 2)
    text = slices_config(base, other, layers=(1, 3))
    result = run_merge(parse_config(text), tmp_path / "sub")
    config = json.loads((tmp_path / "sub" / "config.json").read_text())
    parent_config = json.loads((base / "config.json").read_text())
    assert result.num_layers == 2 and config["num_hidden_layers"] == 2
    assert config["layer_types"] == parent_config["layer_types"][1:3]
    assert_matches_reference(text, tmp_path / "sub", base, other, layer_offset=1)
    generates(tmp_path / "sub")


def test_layer_range_past_the_end_is_an_error(tiny_models, tmp_path):
    with pytest.raises(UserError, match="exceeds the 4 layers"):
        run_merge(parse_config(slices_config(tiny_models("llama", 1), tiny_models("llama", 2), layers=(0, 6))), tmp_path / "o")


def test_different_architectures_are_refused(tiny_models, tmp_path):
    config = parse_config(slices_config(tiny_models("llama", 1), tiny_models("qwen2", 2)))
    with pytest.raises(UserError, match="model_type differs"):
        run_merge(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_small_shard_size_writes_an_index_that_loads(tiny_models, tmp_path):
    base, other = tiny_models("mistral", 1), tiny_models("mistral", 2)
    text = slices_config(base, other)
    run_merge(parse_config(text), tmp_path / "sharded", shard_bytes=30_000)
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    shards = sorted({*index["weight_map"].values()})
    assert len(shards) > 2 and shards[0].startswith("model-00001-of-")
    assert_matches_reference(text, tmp_path / "sharded", base, other)
    generates(tmp_path / "sharded")


def test_output_folder_has_what_users_expect(tiny_models, tmp_path):
    base, other = tiny_models("qwen2", 1), tiny_models("qwen2", 2)
    text = slices_config(base, other)
    run_merge(parse_config(text), tmp_path / "out")
    out = tmp_path / "out"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                 "generation_config.json", "README.md", "mergekit_config.yml"):
        assert (out / name).is_file(), name
    card = (out / "README.md").read_text()
    import yaml

    front = yaml.safe_load(card.split("---\n")[1])
    assert "base_model" not in front and front["library_name"] == "transformers"  # local folders are no Hub ids
    assert {"merge", "slerp"} <= set(front["tags"])
    assert "apply_chat_template" in card and "```yaml" in card
    assert load_config(out / "mergekit_config.yml") == parse_config(text)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"


def test_chat_template_override_is_written(tiny_models, tmp_path):
    base, other = tiny_models("llama", 1), tiny_models("llama", 2)
    run_merge(parse_config(slices_config(base, other, extra="chat_template: llama3")), tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert "<|start_header_id|>user<|end_header_id|>" in prompt


def test_tokenizer_source_other_model_is_copied(tiny_models, tmp_path):
    from testkit.tiny_models import build_tiny_model

    other = build_tiny_model(tmp_path / "other", "llama", 2, chat_template="{{ 'OTHER-TEMPLATE' }}")
    base = tiny_models("llama", 1)
    run_merge(parse_config(slices_config(base, other, extra=f"tokenizer_source: {other}")), tmp_path / "out")
    assert (tmp_path / "out" / "chat_template.jinja").read_text() == "{{ 'OTHER-TEMPLATE' }}"


def test_cancel_leaves_nothing_behind(tiny_models, tmp_path):
    cancel = threading.Event()

    def on_progress(p):
        if p.tensors_done == 5:
            cancel.set()

    config = parse_config(slices_config(tiny_models("llama", 1), tiny_models("llama", 2)))
    with pytest.raises(MergeCancelled):
        run_merge(config, tmp_path / "out", on_progress=on_progress, cancel=cancel)
    assert list(tmp_path.iterdir()) == []


def test_progress_reports_tensors_and_bytes(tiny_models, tmp_path):
    seen = []
    result = run_merge(parse_config(slices_config(tiny_models("llama", 1), tiny_models("llama", 2))), tmp_path / "out",
                       on_progress=seen.append)
    assert [p.tensors_done for p in seen] == list(range(1, len(result.tensors) + 1))
    assert seen[-1].bytes_written == seen[-1].bytes_total == result.bytes_written
    assert result.bytes_written == (tmp_path / "out" / "model.safetensors").stat().st_size - _header_size(tmp_path / "out")


def _header_size(folder: Path) -> int:
    raw = (folder / "model.safetensors").read_bytes()[:8]
    return 8 + int.from_bytes(raw, "little")


def test_existing_output_needs_overwrite_and_overwrite_replaces_it(tiny_models, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    config = parse_config(slices_config(tiny_models("llama", 1), tiny_models("llama", 2)))
    with pytest.raises(UserError, match="already exists.*overwrite"):
        run_merge(config, out)
    assert (out / "keep.txt").read_text() == "mine"
    run_merge(config, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_missing_model_is_a_clear_error(tmp_path):
    config = parse_config(slices_config(tmp_path / "nope", tmp_path / "nada"))
    with pytest.raises(UserError, match="not a directory, a .gguf file or a Hub id"):
        run_merge(config, tmp_path / "out")


def test_folder_without_weights_is_a_clear_error(tiny_models, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    (empty / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(UserError, match="no .safetensors weights.*pickle"):
        run_merge(parse_config(slices_config(empty, tiny_models("llama", 1))), tmp_path / "out")


def test_truncated_safetensors_is_a_clear_error(tiny_models, tmp_path):
    import shutil

    broken = Path(shutil.copytree(tiny_models("llama", 2), tmp_path / "broken"))
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(UserError, match="truncated"):
        run_merge(parse_config(slices_config(tiny_models("llama", 1), broken)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_one_read_and_two_pass_paths_give_the_same_bits(tmp_path, monkeypatch):
    """The RAM budget picks the path per tensor: a 3-block embedding and 2-block MLPs
    (bf16 blocks are 4M elements) are re-read for the second pass at the smallest budget,
    partly kept at 3 slots, read once at 1 GB. Same bytes out every time, and as many
    bytes read as the dry run says."""
    from merging import feed
    from merging.dry_run import dry_run
    from testkit.pairs import synthetic_model

    a = synthetic_model(tmp_path / "a", 2, hidden=512, intermediate=9216, vocab=16400, seed=1)
    b = synthetic_model(tmp_path / "b", 2, hidden=512, intermediate=9216, vocab=16400, seed=2)
    text = tiny_yaml(a, b, "0.3")
    read = []
    original = feed.map_elements
    monkeypatch.setattr(feed, "map_elements", lambda fd, e, start, stop: (read.append((stop - start) * e.dtype.itemsize),
                                                                          original(fd, e, start, stop))[1])
    outputs, reread = {}, {}
    for budget in (feed.MIN_MAX_RAM, feed.RESERVED_BYTES + 3 * feed.SLOT_BYTES, 10**9):
        read.clear()
        run_merge(parse_config(text), tmp_path / str(budget), max_ram=budget)
        merge_read = sum(read)
        outputs[budget] = load_weights(tmp_path / str(budget))
        plan = dry_run(parse_config(text), budget)
        assert merge_read == plan.read_bytes + plan.reread_bytes, budget
        reread[budget] = plan.reread_bytes
    embed, mlp = 16400 * 512 * 4, 9216 * 512 * 4  # bytes of one tensor pair
    assert reread[feed.MIN_MAX_RAM] == 2 * embed + 2 * 3 * mlp  # embed_tokens, lm_head and every MLP: twice
    assert reread[feed.RESERVED_BYTES + 3 * feed.SLOT_BYTES] == 2 * (embed - feed.SLOT_BYTES)  # one block kept
    assert reread[10**9] == 0
    first, *others = outputs.values()
    assert all(set(o) == set(first) and all(torch.equal(o[k], first[k]) for k in first) for o in others)
    assert_matches_reference(text, tmp_path / str(feed.MIN_MAX_RAM), a, b)


def test_the_math_runs_on_one_thread_and_leaves_other_threads_their_cores(tiny_models, tmp_path):
    import threading

    before = torch.get_num_threads()
    seen = []

    def on_progress(_):  # runs in the merging thread, between tensors
        started = []
        other = threading.Thread(target=lambda: started.append(torch.get_num_threads()))
        other.start()
        other.join()
        seen.append((torch.get_num_threads(), started[0]))

    run_merge(parse_config(slices_config(tiny_models("llama", 1), tiny_models("llama", 2))), tmp_path / "out", on_progress=on_progress)
    assert seen and set(seen) == {(1, before)} and torch.get_num_threads() == before
