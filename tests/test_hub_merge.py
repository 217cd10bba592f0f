"""Hub parents planned from their headers and merged while their bytes arrive, through the
Hub-protocol server (testkit/hub_server.py: range requests, a shared bandwidth, cuts,
Xet-marked files, ranges held back so later ones arrive first). Each merge runs in a
fresh process pointed at the server with HF_ENDPOINT, as the app's process would, and
is compared byte for byte with the merge of the same parents as local folders."""

import json
import mmap
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import tiny_yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from core.arrivals import Arrivals, Spans
from core.places import ROOT
from core.remote import RemoteFile
from merging import parse_config, run_merge
from merging.dry_run import dry_run
from testkit.hub_server import HubServer

CHILD = """
import json, sys, threading
from core.errors import UserError
from merging import parse_config, run_merge
from merging.dry_run import dry_run
mode, out = sys.argv[1], sys.argv[2]
config = parse_config(sys.stdin.read())
if mode == "plan":
    print(json.dumps({"plan": dry_run(config, output_parent=__import__("pathlib").Path(out)).describe()}))
    raise SystemExit
cancel = threading.Event()
events = []

def on_progress(p):
    d = p.download
    events.append([p.tensors_done, d.done if d else None, d.total if d else None, p.line()])
    if mode == "cancel" and d is not None and d.done > 0.3 * d.total:
        cancel.set()

if mode == "two":  # a second merge of the same parents while the first downloads them
    first = threading.Thread(target=run_merge, args=(config, out), kwargs={"on_progress": on_progress})
    first.start()
    while not any(e[1] for e in events):
        threading.Event().wait(0.05)
    try:
        run_merge(config, out + "-second")
    except UserError as exc:
        print(json.dumps({"second": str(exc)}))
    first.join()
    raise SystemExit
try:
    result = run_merge(config, out, on_progress=on_progress, cancel=cancel, overwrite=True)
    print(json.dumps({"merged": result.summary(), "events": events}))
except UserError as exc:
    print(json.dumps({"error": str(exc), "events": events, "threads": [t.name for t in threading.enumerate()]}))
"""
WEIGHTS = ("model.safetensors", "config.json")


@pytest.fixture
def hub(tmp_path):
    with HubServer() as server:
        server.home = tmp_path / "hf-home"
        yield server


def run(hub: HubServer, yaml: str, out: Path, mode: str = "merge") -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(hub.home), HF_HUB_OFFLINE="0")
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(out)], cwd=ROOT, env=env, input=yaml, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def local_merge(a: Path, b: Path, out: Path) -> Path:
    run_merge(parse_config(tiny_yaml(a, b, "0.3")), out)
    return out


def same_weights(first: Path, second: Path) -> bool:
    return all((first / name).read_bytes() == (second / name).read_bytes() for name in WEIGHTS)


def weight_bytes_sent(hub: HubServer) -> int:
    return sum(n for path, n in hub.sent.items() if path.endswith(".safetensors"))


def test_a_plan_of_hub_parents_fetches_only_their_headers_and_equals_the_plan_from_the_files(hub, tiny_models, tmp_path):
    a, b = tiny_models("qwen2", 1, hidden=512), tiny_models("qwen2", 2, hidden=512)
    hub.add("org/a", a)
    hub.add("org/b", b)
    started = time.perf_counter()
    remote = run(hub, tiny_yaml("org/a", "org/b", "0.3"), tmp_path, "plan")["plan"].splitlines()
    seconds = time.perf_counter() - started
    local = dry_run(parse_config(tiny_yaml(a, b, "0.3")), output_parent=tmp_path).describe().splitlines()
    parents = sum((m / "model.safetensors").stat().st_size for m in (a, b))
    assert weight_bytes_sent(hub) < 0.01 * parents, (weight_bytes_sent(hub), parents)
    # Sizes, reads, RAM and warnings equal; the time is measured anew, and the disk line says what is to download.
    timeless = [line for line in remote if not line.startswith(("estimated time", "disk:"))]
    assert timeless == [line for line in local if not line.startswith(("estimated time", "disk:"))]
    assert next(line for line in remote if line.startswith("disk:")).startswith(
        f"disk: {parents / 1e6:,.0f} MB of parents to download (0 MB here already)")
    assert not any((hub.home / "hub").rglob("*.safetensors")), "a plan downloads no weights"
    print(f"plan of two Hub parents: {seconds:.2f} s, {weight_bytes_sent(hub)} of {parents} weight bytes fetched")


def test_a_merge_of_hub_parents_is_byte_identical_overlaps_the_download_and_leaves_them_cached(hub, tiny_models, tmp_path):
    a, b = tiny_models("qwen2", 1, hidden=256), tiny_models("qwen2", 2, hidden=256)
    hub.pace.bytes_per_s = 4e6  # both parents, 10 MB, over one 4 MB/s link
    hub.add("org/a", a)
    hub.add("org/b", b)
    outcome = run(hub, tiny_yaml("org/a", "org/b", "0.3"), tmp_path / "out")
    assert "merged" in outcome, outcome
    assert same_weights(tmp_path / "out", local_merge(a, b, tmp_path / "local"))
    # Both parents at once: ranges of each were asked before the other's last.
    asked = [path.split("/")[2] for method, path, ranged in hub.requests if method == "GET" and path.endswith(".safetensors")]
    assert asked.index("b") < len(asked) - 1 - asked[::-1].index("a") and asked.index("a") < len(asked) - 1 - asked[::-1].index("b")
    # The merge went on while the bytes arrived: tensors done with most of the download still to come.
    assert any(done > 0 and got is not None and got < 0.6 * total for done, got, total, _ in outcome["events"])
    assert any("MB downloaded" in line and "MB/s" in line and "tensors" in line for *_, line in outcome["events"])
    # Cached as huggingface_hub caches: a second merge fetches no weight byte.
    hub.sent.clear()
    assert "merged" in run(hub, tiny_yaml("org/a", "org/b", "0.3"), tmp_path / "again")
    assert weight_bytes_sent(hub) == 0


def test_xet_marked_parents_whose_later_ranges_arrive_first_merge_byte_identically(hub, tiny_models, tmp_path):
    """Most Hub repos store weights on Xet; the merge fetches them by HTTP ranges (the Hub's
    bridge), never with hf_xet (the server has no Xet service: a call would fail). Ranges
    starting below 2 MB are held back 1 s, so later ones arrive first; the merge waits for
    exactly the bytes each tensor needs."""
    a, b = tiny_models("qwen2", 1, hidden=256), tiny_models("qwen2", 2, hidden=256)
    hub.add("org/a", a, xet=True, hold_below=2 * 2**20, hold_s=1.0)
    hub.add("org/b", b, xet=True)
    outcome = run(hub, tiny_yaml("org/a", "org/b", "0.3"), tmp_path / "out")
    assert "merged" in outcome, outcome
    ranges = [int(r.removeprefix("bytes=").split("-")[0]) for path, r in hub.finished if "/org/a/" in path and r]
    assert any(later > earlier for earlier, later in zip(ranges[1:], ranges, strict=False)), ranges  # out of order
    assert same_weights(tmp_path / "out", local_merge(a, b, tmp_path / "local"))


def test_cancel_mid_download_stops_both_downloads_and_writes_nothing(hub, tiny_models, tmp_path):
    a, b = tiny_models("qwen2", 1, hidden=256), tiny_models("qwen2", 2, hidden=256)
    hub.pace.bytes_per_s = 2e6
    hub.add("org/a", a)
    hub.add("org/b", b)
    outcome = run(hub, tiny_yaml("org/a", "org/b", "0.3"), tmp_path / "out", "cancel")
    assert outcome.get("error") == "merge: cancelled by the user — nothing was written; run it again", outcome
    assert not any(name.startswith("download") for name in outcome["threads"])  # every connection stopped
    assert list(tmp_path.iterdir()) == [hub.home]  # no output, no partial folder
    asked = len(hub.requests)
    time.sleep(1.0)
    assert len(hub.requests) == asked
    kept = list((hub.home / "hub").rglob("*.slerp-part"))
    assert len(kept) == 2  # what arrived of each parent stays for the next try
    assert "merged" in run(hub, tiny_yaml("org/a", "org/b", "0.3"), tmp_path / "out")
    assert same_weights(tmp_path / "out", local_merge(a, b, tmp_path / "local"))


def test_a_cut_download_refuses_in_one_line_and_the_retry_resumes_where_it_stopped(hub, tiny_models, tmp_path):
    a, b = tiny_models("qwen2", 1, hidden=256), tiny_models("qwen2", 2, hidden=256)
    size = (a / "model.safetensors").stat().st_size
    for repo, folder in (("org/a", a), ("org/b", b)):
        hub.add(repo, folder, cut_after=size // 2)  # the network goes after half of each parent
    outcome = run(hub, tiny_yaml("org/a", "org/b", "0.3"), tmp_path / "out")
    error = outcome.get("error", "")
    assert error.startswith("download: the connection to the Hub broke while downloading 'org/"), outcome
    assert error.endswith("arrived and are kept — try again: the download resumes where it stopped") and "\n" not in error
    assert not (tmp_path / "out").exists()
    for repo in hub.repos.values():
        repo.cut_after = None  # the network is back
    hub.sent.clear()
    assert "merged" in run(hub, tiny_yaml("org/a", "org/b", "0.3"), tmp_path / "out")
    assert weight_bytes_sent(hub) <= 0.6 * 2 * size, (weight_bytes_sent(hub), 2 * size)  # the rest, not all again
    assert same_weights(tmp_path / "out", local_merge(a, b, tmp_path / "local"))


def test_a_merge_that_will_not_fit_the_disk_is_refused_before_any_weight_is_downloaded(hub, tiny_models, tmp_path):
    """A parent whose header declares 1 GB more than this disk has free (a sparse file on the
    server's side, larger than this machine's RAM: its header is checked by the format's rules)."""
    import shutil

    from safetensors.torch import load_file

    giant = tmp_path / "giant"
    giant.mkdir()
    small = tiny_models("qwen2", 1)
    for item in small.iterdir():
        if item.name != "model.safetensors":
            (giant / item.name).write_bytes(item.read_bytes())
    tensors = load_file(small / "model.safetensors")
    extra = (1000, (shutil.disk_usage(tmp_path).free + 10**9) // 2000)  # bf16
    offsets, header, at = {}, {}, 0
    for name, tensor in tensors.items():
        header[name] = {"dtype": "BF16", "shape": list(tensor.shape), "data_offsets": [at, at + tensor.numel() * 2]}
        offsets[name], at = at, at + tensor.numel() * 2
    header["model.extra.weight"] = {"dtype": "BF16", "shape": list(extra), "data_offsets": [at, at + extra[0] * extra[1] * 2]}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(giant / "model.safetensors", "wb") as fh:
        fh.write(len(raw).to_bytes(8, "little") + raw)
        for tensor in tensors.values():
            fh.write(tensor.view(-1).view(__import__("torch").uint8).numpy().tobytes())
        fh.truncate(8 + len(raw) + at + extra[0] * extra[1] * 2)
    hub.add("org/giant", giant)
    hub.add("org/small", small)
    plan = run(hub, tiny_yaml("org/giant", "org/giant"), tmp_path / "plan", "plan")["plan"]
    assert "warning: the merge will refuse: disk: this merge needs" in plan, plan
    outcome = run(hub, tiny_yaml("org/giant", "org/giant"), tmp_path / "out")
    error = outcome.get("error", "")
    assert re.fullmatch(r"disk: this merge needs ([\d.,]+) GB on the disk of the Hugging Face cache and the outputs folder "
                        r"\(([\d.,]+) GB of parents to download, \2 GB of output\) and [\d.,]+ GB is free — free disk space, "
                        r"or merge smaller models", error), outcome
    assert weight_bytes_sent(hub) < 200_000  # the headers only


def test_a_second_merge_of_parents_still_downloading_is_refused_in_one_line_and_the_first_goes_on(hub, tiny_models, tmp_path):
    a, b = tiny_models("qwen2", 1, hidden=256), tiny_models("qwen2", 2, hidden=256)
    hub.pace.bytes_per_s = 4e6
    hub.add("org/a", a)
    hub.add("org/b", b)
    second = run(hub, tiny_yaml("org/a", "org/b", "0.3"), tmp_path / "out", "two")["second"]
    assert second == ("download: 'org/a' is downloading for another merge on this machine — try again when that merge has "
                      "finished: the parent is cached then")
    assert not (tmp_path / "out-second").exists()
    assert same_weights(tmp_path / "out", local_merge(a, b, tmp_path / "local"))


def test_a_mapping_that_outlives_a_download_does_not_keep_its_parent_locked(hub, tmp_path):
    """A block a cancelled merge mapped from a part file may outlive the download (a
    traceback keeps it until the collector runs); the next merge of the parent must get
    the file (found in CI: "'org/a' is downloading for another merge" after Cancel)."""
    payload = os.urandom(6 << 20)
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "model.safetensors").write_bytes(payload)
    hub.add("org/a", tmp_path / "repo")
    hub.pace.bytes_per_s = 2e6
    cache = tmp_path / "cache"
    file = RemoteFile("org/a", "model.safetensors", f"{hub.url}/org/a/resolve/main/model.safetensors", len(payload),
                      cache / "snapshots" / "c0" / "model.safetensors", cache / "blobs" / "e0", payload[:65536])
    cancel = threading.Event()
    with Arrivals([file], [(file.local, 0, 1 << 20)], cancel, None) as first:
        fd = first.wait(file.local, 0, 1 << 20, threading.Event())
        block = mmap.mmap(fd, 1 << 20, prot=mmap.PROT_READ)  # what the merge's reader does (it duplicates fd)
        cancel.set()
    assert block[:4096] == payload[:4096]
    with Arrivals([file], [], threading.Event(), None) as again:  # the next Merge click, the block still mapped
        again.finish()
    assert file.blob.read_bytes() == payload and file.local.read_bytes() == payload
    block.close()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 20)), max_size=12), st.integers(0, 70), st.integers(0, 20))
def test_the_spans_a_download_has_are_exactly_the_bytes_written(writes, start, length):
    """Spans (core/arrivals.py) against the plain set of bytes written: what the merge waits for."""
    spans, written = Spans(), set()
    for begin, size in writes:
        spans.add(begin, begin + size)
        written |= set(range(begin, begin + size))
    assert spans.total == len(written)
    assert spans.covers(start, start + length) == set(range(start, start + length)).issubset(written)
    gaps = spans.missing(start, start + length)
    assert {i for a, b in gaps for i in range(a, b)} == set(range(start, start + length)) - written
    assert all(a < b for a, b in gaps) and spans.starts == sorted(spans.starts)


NOTE = """
from core.sources import resolve_model
from merging.checkpoint import download_note
print(download_note(["org/a", "org/b"], "The divergence map"))
resolve_model("org/a")
print(download_note(["org/a", "org/b"], "The divergence map"))
resolve_model("org/b")
print(download_note(["org/a", "org/b"], "The divergence map"))
"""


def test_the_divergence_map_says_it_downloads_the_parents_before_it_does(hub, tiny_models):
    """The map and the t-sweep read every weight: their progress first says how much they
    download (nothing once the parents are cached)."""
    hub.add("org/a", tiny_models("qwen2", 1, hidden=256))
    hub.add("org/b", tiny_models("qwen2", 2, hidden=256))
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HF_HUB_OFFLINE")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(hub.home), HF_HUB_OFFLINE="0")
    done = subprocess.run([sys.executable, "-c", NOTE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["The divergence map reads every weight: downloading 10 MB of the parents first",
                                        "The divergence map reads every weight: downloading 5 MB of the parents first", "None"]


def test_a_plan_names_public_mode_s_limits_when_they_refuse_it(tiny_models, tmp_path):
    from core.policy import AccessPolicy

    a, b = tiny_models("qwen2", 1, hidden=256), tiny_models("qwen2", 2, hidden=256)
    policy = AccessPolicy((a.parent,), tmp_path, max_parents_bytes=5 * 10**6)
    described = dry_run(parse_config(tiny_yaml(a, b)), output_parent=tmp_path, policy=policy).describe()
    assert "warning: the merge will refuse: models: the parents take 0.0 GB; this Space merges at most 0 GB" in described
