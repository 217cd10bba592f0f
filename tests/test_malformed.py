"""Strangers' checkpoints: every malformed case in testkit/malformed.py is refused in one
line that names the file or field, by the merge CLI, the chat CLI and the app, with
nothing written; non-finite weights are refused unless the merge is told to go ahead."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from helpers import run_main, tiny_yaml, unpack
from safetensors.torch import load_file

from arena import chat_session
from core.errors import UserError
from inference.__main__ import main as chat_main
from merging import parse_config, run_merge
from merging.__main__ import main as merge_main
from testkit.malformed import CASES, broken_copy
from ui import chat_actions, merge_tab

HANG_S = 60  # far above any case's time (benchmarks/malformed.py measures them)


def one_line_error(err: str) -> str:
    """The CLI's stderr holds one line besides its progress bars, an error naming a field:
    no traceback."""
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip() and "%|" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def bounded(main, argv: list, capsys) -> tuple[int, str, str]:
    """run_main in a thread of its own, so a checkpoint that makes the CLI hang (a config of
    10^9 layers once did) fails the test instead of stalling the suite."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(run_main(main, argv, capsys)), daemon=True)
    thread.start()
    thread.join(HANG_S)
    assert result, f"no answer in {HANG_S} s"
    return result[0]


@pytest.fixture(scope="module")
def broken(tiny_models, tmp_path_factory):
    root, made = tmp_path_factory.mktemp("broken"), {}

    def get(case: str) -> Path:
        if case not in made:
            made[case] = broken_copy(tiny_models("llama", 1), root / case.replace(" ", "_").replace("^", ""), case)
        return made[case]
    return get


@pytest.mark.parametrize("case", CASES)
def test_the_merge_cli_and_the_app_refuse_each_malformed_parent_in_one_line_and_write_nothing(case, broken, tiny_models, tmp_path, capsys):
    folder = broken(case)
    config = tmp_path / "merge.yml"
    config.write_text(tiny_yaml(folder, tiny_models("llama", 2)))
    code, _, err = bounded(merge_main, [config, tmp_path / "out"], capsys)
    line = one_line_error(err)
    assert code == 2 and line.startswith("error: model") and (str(folder) in line or "base_model" in line)
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["merge.yml"]
    # The app's merge panel shows the same line, under its heading.
    panel = merge_tab.merge(config.read_text(), "strangers", False, merge_tab.MergeSession(), progress=lambda *a, **k: None)
    assert panel == (f"### ❌ Merge failed\n{line.removeprefix('error: ')}", "", "", "")


@pytest.mark.parametrize("case", CASES)
def test_the_chat_cli_and_the_app_refuse_each_malformed_model_in_one_line(case, broken, tiny_models, capsys):
    folder = broken(case)
    code, out, err = bounded(chat_main, ["chat", folder, "--prompt", "hi", "--max-new-tokens", "2", "--precision", "bf16"], capsys)
    line = one_line_error(err)
    assert code == 2 and line.startswith("error: model: ") and out == ""
    # In the app the same line shows under that model's pane, and the other panes answer.
    good = str(tiny_models("llama", 2))
    state = chat_session.ChatSession()
    req = chat_session.ChatRequest(temperature=0.0, max_new_tokens=4, seed=0, merged=good, parent_a=str(folder), parent_b=good,
                               merged_on=True, parent_a_on=True, parent_b_on=True, merged_precision="bf16",
                               parent_precision="bf16", lock_seed=False)
    chat_actions.take_message("hello", req, state)
    (merged, parent_a, parent_b), stats = unpack(list(chat_actions.stream(req, state))[-1])
    assert stats[1] == f"⚠️ {line.removeprefix('error: ')}" and parent_a == []
    assert merged[-1]["role"] == "assistant" and merged == parent_b  # the same model, greedy: the same reply


def test_a_refused_load_gives_back_its_reservation_and_the_cache_serves_the_next_visitor(broken, tiny_models):
    from inference.cache import ModelCache

    cache = ModelCache(memory_budget=10**9)
    for _ in range(3):
        with pytest.raises(UserError, match="holds NaN or Inf in model.layers.1.mlp.down_proj.weight"):
            cache.get(str(broken("weights hold NaN")), "bf16")
    assert cache._reserved == 0 and cache.loaded() == []
    good = cache.get(str(tiny_models("llama", 2)), "bf16")
    assert cache.loaded() == [good]


def test_a_merge_told_to_go_ahead_with_non_finite_weights_lists_them_in_the_model_card(broken, tiny_models, tmp_path, capsys):
    config = tmp_path / "merge.yml"
    config.write_text(tiny_yaml(broken("weights hold NaN"), tiny_models("llama", 2)))
    code, out, err = run_main(merge_main, [config, tmp_path / "out", "--allow-non-finite"], capsys)
    assert code == 0, err
    name = "model.layers.1.mlp.down_proj.weight"
    assert f"warning: {name} holds NaN or Inf in" in err
    assert f"{name} holds NaN or Inf" in (tmp_path / "out" / "README.md").read_text()
    merged = load_file(tmp_path / "out" / "model.safetensors")
    assert merged[name].float().isnan().any() and all(t.float().isfinite().all() for n, t in merged.items() if n != name)


def test_a_non_finite_self_merge_is_refused_too(broken, tmp_path, capsys):
    """A model merged with itself is copied, not blended: the copy checks its values too."""
    folder = broken("weights hold Inf")
    config = tmp_path / "merge.yml"
    config.write_text(tiny_yaml(folder, folder))
    code, _, err = run_main(merge_main, [config, tmp_path / "out"], capsys)
    assert code == 2 and "holds NaN or Inf in model.layers.1.mlp" in one_line_error(err)


def test_a_header_claiming_more_than_the_file_allocates_nothing_near_its_claim(tmp_path):
    """A 64-byte file whose header claims 4 GB: refused, and the process's peak RSS (Rust's
    and torch's allocations included) grows by far less than the claim."""
    path = tmp_path / "claims.safetensors"
    header = json.dumps({"a": {"dtype": "F32", "shape": [2**30], "data_offsets": [0, 2**32]}}).encode()
    path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(64))
    child = ("import resource, sys\nfrom core.checkpoints import read_header\nfrom core.errors import UserError\n"
             "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
             "try:\n    read_header(__import__('pathlib').Path(sys.argv[1]))\nexcept UserError as exc:\n    print(exc)\n"
             "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)")
    done = subprocess.run([sys.executable, "-c", child, str(path)], capture_output=True, text=True, timeout=60)
    message, grown_kb = done.stdout.strip().splitlines()
    assert "claims.safetensors is not a valid safetensors file" in message and int(grown_kb) < 20_000, done.stdout


def test_a_non_finite_parent_is_refused_on_every_math_path(broken, tiny_models, tmp_path, math_path):
    """The C kernel's sums and torch's both carry a NaN through (forced here: which one a
    merge takes depends on which measured faster on the machine)."""
    config = parse_config(tiny_yaml(tiny_models("llama", 2), broken("weights hold NaN")))
    with pytest.raises(UserError, match=r"weights_hold_NaN' holds NaN or Inf in model.layers.1.mlp.down_proj.weight"):
        run_merge(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()
