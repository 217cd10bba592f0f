"""The merge CLI (in-process through main(argv); one real subprocess with a Hub id
through an offline cache), and the bundled SmolLM2 GGUF as a parent."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import load_weights, run_main, slices_config
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from core.errors import UserError
from core.places import ROOT
from merging.__main__ import main


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "merging", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_cli_merges_with_progress_and_exit_zero(tiny_models, tmp_path, capsys):
    config = tmp_path / "merge.yml"
    config.write_text(slices_config(tiny_models("llama", 1), tiny_models("llama", 2)))
    code, out, err = run_main(main, [config, tmp_path / "out", "--shard-size", "40KB"], capsys)
    assert code == 0, err
    assert "merged into" in out and "blended)" in out and (tmp_path / "out" / "model.safetensors.index.json").is_file()
    code, _, err = run_main(main, [config, tmp_path / "out"], capsys)
    assert code == 2 and "--overwrite" in err
    assert run_main(main, [config, tmp_path / "out", "--overwrite"], capsys)[0] == 0


def test_cli_bad_input_is_one_line_without_traceback_and_writes_nothing(tiny_models, tmp_path, capsys):
    config = tmp_path / "bad.yml"
    config.write_text(slices_config(tiny_models("llama", 1), tiny_models("llama", 2)).replace("slerp", "ties"))
    code, _, err = run_main(main, [config, tmp_path / "out"], capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == ["error: merge_method: 'ties' is not supported — set `merge_method: slerp` (the supported method)"]
    assert not (tmp_path / "out").exists()
    code, _, err = run_main(main, [config, tmp_path / "out", "--shard-size", "lots"], capsys)
    assert code == 2 and "--shard-size" in err and "Traceback" not in err


def prefill_hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """The layout huggingface_hub writes: refs/main -> snapshots/<commit>/files."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(folder, repo / "snapshots" / commit)


def test_hub_ids_resolve_through_an_offline_cache_in_a_real_cli_process(tiny_models, tmp_path):
    cache = tmp_path / "hf-cache"
    prefill_hub_cache(cache, "tiny-org/base-model", tiny_models("qwen2", 1))
    prefill_hub_cache(cache, "tiny-org/instruct-model", tiny_models("qwen2", 2))
    config = tmp_path / "hub.yml"
    config.write_text(slices_config("tiny-org/base-model", "tiny-org/instruct-model"))
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    done = run_cli(str(config), str(tmp_path / "out"), env=env)
    assert done.returncode == 0, done.stderr
    merged = load_weights(tmp_path / "out")
    assert not torch.equal(merged["model.norm.weight"], load_weights(tiny_models("qwen2", 1))["model.norm.weight"])
    missing = tmp_path / "missing.yml"
    missing.write_text(slices_config("tiny-org/base-model", "tiny-org/not-cached"))
    failed = run_cli(str(missing), str(tmp_path / "out2"), env=env)
    assert failed.returncode == 2 and "not in the local Hugging Face cache" in failed.stderr
    assert not (tmp_path / "out2").exists()


def test_bundled_smollm2_merged_with_itself_answers_paris(smollm2_dir, tmp_path, capsys):
    config = tmp_path / "smol.yml"
    config.write_text("""
slices:
  - sources:
      - model: bundled:SmolLM2-135M-Instruct
        layer_range: [0, 30]
      - model: bundled:SmolLM2-135M-Instruct
        layer_range: [0, 30]
merge_method: slerp
base_model: bundled:SmolLM2-135M-Instruct
parameters:
  t: [0, 0.5, 0.3, 0.7, 1]
dtype: bfloat16
""")
    code, _, err = run_main(main, [config, tmp_path / "smol-self"], capsys)
    assert code == 0, err
    merged = load_file(tmp_path / "smol-self" / "model.safetensors")
    assert "lm_head.weight" not in merged  # SmolLM2 ties its embeddings
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "smol-self")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "smol-self", dtype=torch.bfloat16)
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    output = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


def test_gguf_conversion_is_cached(smollm2_dir):
    from core.sources import resolve_model

    assert resolve_model("bundled:SmolLM2-135M-Instruct") == smollm2_dir
    assert (smollm2_dir / "config.json").is_file() and "quantization_config" not in (smollm2_dir / "config.json").read_text()


HUB = "https://huggingface.co"


@pytest.mark.parametrize("status, headers, token, said, fix", [
    (403, {"X-Error-Code": "GatedRepo"}, "hf_x", "is gated and this account has not been granted access",
     "accept its license at https://huggingface.co/org/model"),
    (401, {}, None, "was not found, or it is private or gated", "log in with `hf auth login` or set HF_TOKEN"),
    (404, {"X-Error-Code": "RepoNotFound"}, "hf_x", "was not found, or this account cannot see it (private)", "ask its owner"),
    (401, {"X-Error-Message": "Invalid credentials in Authorization header"}, "hf_x", "refused the Hugging Face token",
     "a new token"),
    (500, {}, "hf_x", "download of 'org/model' failed", "retry"),
], ids=["gated", "no-token", "missing-or-private", "revoked-token", "server-error"])
def test_each_hub_failure_gets_its_own_line(monkeypatch, status, headers, token, said, fix):
    """The Hub's answers as huggingface_hub classifies them (its own hf_raise_for_status on
    real responses), each turned into one line that says what to do."""
    import httpx2
    from huggingface_hub import hf_raise_for_status

    from core import sources

    monkeypatch.setattr("core.hub_access.has_token", lambda: token is not None)
    request = httpx2.Request("GET", f"{HUB}/api/models/org/model/revision/main")
    with pytest.raises(UserError) as raised, sources.hub_errors("org/model"):
        hf_raise_for_status(httpx2.Response(status, headers=headers, request=request))
    message = str(raised.value)
    assert message.startswith("⚠️ model:") or message.startswith("model:"), message
    assert said in message and fix in message and "\n" not in message


def test_a_broken_hub_connection_gets_its_own_line():
    """A connection cut or garbled past huggingface_hub's retries (seen: a HEAD answer with
    a body, read as the next answer's status line) is one line in the pane, not a crash."""
    import httpx2

    from core import sources

    with pytest.raises(UserError, match="the connection to the Hub broke while fetching 'org/model' .RemoteProtocolError. — try again"), \
            sources.hub_errors("org/model"):
        raise httpx2.RemoteProtocolError("illegal status line")


def test_a_full_disk_while_fetching_is_said_as_this_machine_s_problem():
    from core import sources

    with pytest.raises(UserError, match=r"^model: fetching 'org/model' failed on this machine \(No space left on device\) — free some"), \
            sources.hub_errors("org/model"):
        raise OSError(28, "No space left on device")
