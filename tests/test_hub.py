"""The Hub as a Space visitor meets it, through testkit/hub_server.py: a server on
127.0.0.1 that answers the endpoints huggingface_hub calls (repo info, file tree, HEAD
and ranged GET of files), pointed at by HF_ENDPOINT. Each case resolves a parent in a
fresh process with its own Hugging Face cache, as the app's process would."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import tiny_yaml
from huggingface_hub import constants

from arena.rounds import check_access_to
from core.errors import UserError
from core.hub_access import as_visitor
from core.places import ROOT
from testkit.hub_server import HubServer
from ui import merge_tab
from ui.context import Visitor

RESOLVE = """
import sys, threading
import huggingface_hub.constants
from core.downloads import watching
huggingface_hub.constants.DOWNLOAD_CHUNK_SIZE = 64 * 1024  # progress every 64 KB (1 MB in the app)
from core.errors import UserError
from core.sources import resolve_model
cancelled = threading.Event()

def report(progress):
    print("progress", progress.done, progress.total, progress.line(), flush=True)
    if sys.argv[2] == "cancel" and progress.done > progress.total * 9 // 10:  # the small shard long done, the large not
        cancelled.set()

try:
    with watching(sys.argv[1], report, cancelled):
        print("resolved", resolve_model(sys.argv[1]))
except UserError as exc:
    print("error", exc)
"""


@pytest.fixture
def hub(tiny_models, tmp_path):
    with HubServer() as server:
        server.home = tmp_path / "hf-home"
        server.weights = tiny_models("qwen2", 1, hidden=256)  # 5 MB of weights: a download worth watching
        yield server


def resolve(hub: HubServer, repo: str, token: str | None = None, mode: str = "") -> list[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(hub.home), HF_HUB_DISABLE_XET="1")
    if token:
        env["HF_TOKEN"] = token
    done = subprocess.run([sys.executable, "-c", RESOLVE, repo, mode], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.splitlines()


def outcome(lines: list[str]) -> str:
    return next(line for line in reversed(lines) if line.startswith(("resolved", "error")))


def test_a_public_repo_downloads_with_its_progress(hub):
    hub.add("org/public", hub.weights, bytes_per_s=4e6)
    lines = resolve(hub, "org/public")
    assert outcome(lines).startswith("resolved") and (Path(outcome(lines).split()[1]) / "model.safetensors").is_file()
    progress = [tuple(map(int, line.split()[1:3])) for line in lines if line.startswith("progress")]
    assert len(progress) > 10 and [done for done, _ in progress] == sorted(done for done, _ in progress)
    assert progress[-1][0] == progress[-1][1] > 4e6  # every byte counted, of a total known from the start
    assert any("MB/s, about" in line and "s left" in line for line in lines)


def test_a_gated_repo_is_refused_with_its_own_line_until_access_is_granted(hub):
    hub.add("org/gated", hub.weights, gated_for={"hf_granted"})
    assert outcome(resolve(hub, "org/gated")) == ("error model: 'org/gated' is gated: only accounts granted access may download "
                                                  "it — accept its license at https://huggingface.co/org/gated, then log in "
                                                  "with `hf auth login` or set HF_TOKEN")
    assert "has not been granted access" in outcome(resolve(hub, "org/gated", token="hf_other"))
    assert outcome(resolve(hub, "org/gated", token="hf_granted")).startswith("resolved")


def test_a_missing_repo_gets_its_own_line(hub):
    assert outcome(resolve(hub, "org/missing")) == ("error model: 'org/missing' was not found, or it is private or gated — check "
                                                    "the id; for a private or gated model, log in with `hf auth login` or set HF_TOKEN")
    assert "this account cannot see it (private)" in outcome(resolve(hub, "org/missing", token="hf_any"))


def test_a_dropped_connection_resumes_where_it_stopped(hub):
    hub.add("org/dropped", hub.weights, drop_after=1_000_000)
    assert outcome(resolve(hub, "org/dropped")).startswith("resolved")
    weights = [r for r in hub.requests if r[0] == "GET" and r[1].endswith("model.safetensors")]
    first, resumed = [r[2] for r in weights]
    assert first == "" and 0 < int(resumed.removeprefix("bytes=").rstrip("-")) <= 1_000_000  # cut after 1 MB, asked from there
    cached = next(hub.home.rglob("model.safetensors"))
    assert cached.read_bytes() == (hub.weights / "model.safetensors").read_bytes()


def sharded(weights: Path, folder: Path) -> Path:
    """The model in two weight files with an index, as save_pretrained shards a large one:
    a small first shard (a tenth of the bytes) and a large second one."""
    from safetensors.torch import load_file, save_file

    folder.mkdir()
    for item in weights.iterdir():
        if item.name != "model.safetensors":
            (folder / item.name).write_bytes(item.read_bytes())
    tensors = load_file(weights / "model.safetensors")
    names = sorted(tensors, key=lambda n: tensors[n].numel())
    sizes = [tensors[n].numel() for n in names]
    cut = next(i for i in range(len(names)) if sum(sizes[:i + 1]) > sum(sizes) // 10)
    halves = {"model-00001-of-00002.safetensors": names[:cut], "model-00002-of-00002.safetensors": names[cut:]}
    for shard, keys in halves.items():
        save_file({k: tensors[k] for k in keys}, folder / shard, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: shard for shard, keys in halves.items() for k in keys}}
    (folder / "model.safetensors.index.json").write_text(__import__("json").dumps(index))
    return folder


def test_cancel_stops_a_download_and_the_next_try_fetches_only_what_was_missing(hub, tmp_path):
    """Cancelled at 90% of the bytes, when the small shard (10%) is complete and the large one not: the
    next try fetches the large one only."""
    shards = sharded(hub.weights, tmp_path / "sharded")
    hub.add("org/cancelled", shards, bytes_per_s=4e6)
    lines = resolve(hub, "org/cancelled", mode="cancel")
    assert outcome(lines) == (
        "error download: the download of 'org/cancelled' was cancelled — start it again: the files already complete are kept")
    # The total is every file's bytes from the first line (huggingface_hub's own grows file by file).
    totals = {int(line.split()[2]) for line in lines if line.startswith("progress")}
    assert totals == {sum(f.stat().st_size for f in shards.iterdir())}
    assert {p.name for p in hub.home.rglob("model-*.safetensors")} == {"model-00001-of-00002.safetensors"}
    hub.requests.clear()
    assert outcome(resolve(hub, "org/cancelled")).startswith("resolved")
    fetched = [r[1].rsplit("/", 1)[1] for r in hub.requests if r[0] == "GET" and r[1].endswith(".safetensors")]
    assert fetched == ["model-00002-of-00002.safetensors"]


def test_a_repo_holding_only_pickles_is_refused_without_downloading_them(hub, tmp_path):
    pickles = tmp_path / "pickles"
    pickles.mkdir()
    (pickles / "config.json").write_text((hub.weights / "config.json").read_text())
    (pickles / "pytorch_model.bin").write_bytes(b"\x80" * 1000)
    hub.add("org/pickles", pickles)
    assert outcome(resolve(hub, "org/pickles")).startswith("error model: 'org/pickles' has no .safetensors weights")
    assert not any(r[1].endswith(".bin") for r in hub.requests)  # a pickle runs code: never fetched


@pytest.fixture
def online(hub, monkeypatch):
    """This process's huggingface_hub pointed at the server, online (the suite runs offline)."""
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    hub.users.update(hf_alice="alice", hf_owner="owner")
    monkeypatch.setenv("HF_TOKEN", "hf_owner")  # the Space's own secret, which a visitor's push must not use
    return hub


def test_a_signed_in_visitor_pushes_to_their_own_namespace_with_their_token(online, tmp_path):
    merged = tmp_path / "my-merge"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    (merged / "README.md").write_text("# card")
    alice = Visitor("hf_alice", "alice")
    assert merge_tab.push_to_hub(str(merged), "", "", alice) == (f"✅ pushed to {online.url}/alice/my-merge", None), online.requests
    assert online.commits == [("alice/my-merge", "alice")], online.requests
    assert (online.repos["alice/my-merge"].folder / "README.md").read_text() == "# card"
    message, _ = merge_tab.push_to_hub(str(merged), "owner/my-merge", "", alice)  # not her namespace: the Hub refuses
    assert message.startswith("⚠️ push: the Hub did not accept the upload") and len(online.commits) == 1


def test_with_sign_in_on_nobody_pushes_with_the_spaces_own_token(online, tmp_path, monkeypatch):
    monkeypatch.setattr(merge_tab, "SIGN_IN", True)
    assert merge_tab.push_to_hub(str(tmp_path), "owner/x", "", Visitor()) == (
        "⚠️ push: not signed in — sign in with Hugging Face (the button at the top of the page), or paste a write token", None)
    assert online.commits == [] and online.requests == []


def test_a_gated_model_cached_by_an_account_with_access_is_not_served_to_one_without(hub):
    """On a Space all visitors share one Hugging Face cache: the files one visitor with access
    fetched are refused to the next, who has none (the Hub is asked each time)."""
    hub.add("org/gated", hub.weights, gated_for={"hf_granted"})
    assert outcome(resolve(hub, "org/gated", token="hf_granted")).startswith("resolved")
    assert outcome(resolve(hub, "org/gated", token="hf_other")) == (
        "error model: 'org/gated' is gated and this account has not been granted access — accept its license at "
        "https://huggingface.co/org/gated with the account whose token is used")
    assert outcome(resolve(hub, "org/gated")).startswith("error model: 'org/gated' is gated: only accounts granted access")


def test_a_merge_made_here_of_a_gated_parent_is_served_only_to_a_visitor_who_may_download_that_parent(online, tmp_path):
    online.add("org/gated", online.weights, gated_for={"hf_alice"})
    online.add("org/public", online.weights)
    merged = tmp_path / "merge"
    merged.mkdir()
    (merged / "mergekit_config.yml").write_text("models:\n  - model: org/gated\n  - model: org/public\nmerge_method: slerp\n"
                                                "base_model: org/gated\nparameters:\n  t: 0.5\ndtype: bfloat16\n")
    with as_visitor("hf_alice"):
        check_access_to(f"{merged}#t=self_attn[0.5] mlp[0.5] default[0.5]")  # a t-preview of it too
    with as_visitor("hf_bob"), pytest.raises(UserError, match="'org/gated' is gated and this account has not been granted"):
        check_access_to(str(merged))


SWEEP = """
import sys
from core.errors import UserError
from evaluation.prompt_set import PromptCase
from evaluation.sweep import SweepRequest, sweep_stream
from merging import parse_config
config = parse_config(sys.stdin.read())
request = SweepRequest(config, (PromptCase(({"role": "user", "content": "hello"},)),), (0.0, 1.0), max_new_tokens=4,
                       token=sys.argv[1] or None)
assert sys.argv[1] not in repr(request) or not sys.argv[1]
try:
    *progress, points = sweep_stream(request)
    print("swept", [p.t for p in points], progress[-1].done == progress[-1].total)
except UserError as exc:
    print("error", exc)
"""


def test_a_t_sweep_reads_a_gated_parent_with_the_signed_in_visitor_s_token(hub, tiny_models):
    """The sweep's request carries the visitor's token (on ZeroGPU into a forked worker): the
    gated parent downloads for the visitor granted it, and not with the Space's own token."""
    hub.add("org/gated", tiny_models("qwen2", 1), gated_for={"hf_alice"})
    hub.add("org/public", tiny_models("qwen2", 2))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(hub.home), HF_HUB_DISABLE_XET="1", HF_TOKEN="hf_owner")  # the Space's secret

    def sweep_as(token: str) -> str:
        done = subprocess.run([sys.executable, "-c", SWEEP, token], cwd=ROOT, env=env, input=tiny_yaml("org/gated", "org/public"),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout.splitlines()[-1]

    assert sweep_as("").startswith("error model: 'org/gated' is gated and this account has not been granted access")
    assert sweep_as("hf_alice") == "swept [0.0, 1.0] True"
