"""Bad input, faults, public mode and concurrency: every case ends in a one-line error
naming the field and the fix, nothing half-written, and the app still serving."""

import errno
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gradio as gr
import pytest
import torch
from gradio_client import Client
from helpers import slices_config, tiny_yaml

from arena import chat_session
from core import native
from core.errors import UserError
from core.places import ROOT
from core.policy import AccessPolicy
from inference import generation, load_model
from merging import parse_config, run_merge
from merging.safetensors_io import StreamingWriter
from testkit.app_process import text_of
from ui import chat_actions, merge_tab


@pytest.fixture
def roots(tmp_path):
    models, outputs = tmp_path / "models", tmp_path / "outputs"
    models.mkdir()
    outputs.mkdir()
    return models, outputs


@pytest.mark.parametrize("ref", ["../../etc/passwd", "/etc", "/etc/passwd", "~/.ssh", "models/../../secret"])
def test_public_mode_refuses_paths_outside_the_roots(roots, ref):
    policy = AccessPolicy((roots[0],), roots[1])
    with pytest.raises(UserError, match="outside the folders this app may use"):
        policy.check_model(ref)
    with pytest.raises(UserError, match="outside the folders"):
        policy.check_output(Path(ref))


def test_public_mode_refusals_name_no_server_path_and_say_what_to_do(roots):
    policy = AccessPolicy((roots[0],), roots[1])
    with pytest.raises(UserError) as refused:
        policy.check_model("/etc")
    assert str(refused.value) == "model: '/etc' is outside the folders this app may use — use a Hub id or a path under models/, outputs/"
    with pytest.raises(UserError) as empty:
        policy.check_model("  ")
    assert str(empty.value) == "model: empty — type a Hub id such as org/name, or pick a model from the list"


def test_public_mode_allows_roots_hub_ids_and_the_bundled_model(roots, tiny_models):
    policy = AccessPolicy((roots[0],), roots[1])
    inside = Path(shutil.copytree(tiny_models("llama", 1), roots[0] / "llama"))
    for ref in (str(inside), "Qwen/Qwen2.5-0.5B", "bundled:SmolLM2-135M-Instruct"):
        policy.check_model(ref)
    policy.check_output(roots[1] / "my-merge")


def test_public_mode_refuses_a_symlink_that_leads_out(roots, tiny_models):
    link = roots[0] / "escape"
    link.symlink_to(tiny_models("llama", 1))  # outside both roots
    with pytest.raises(UserError, match="outside the folders"):
        AccessPolicy((roots[0],), roots[1]).check_model(str(link))


def test_public_app_refuses_outside_paths_in_every_field(roots, monkeypatch, tiny_models):
    monkeypatch.setenv("SLERP_ARENA_PUBLIC", "1")
    monkeypatch.setenv("SLERP_ARENA_MODELS", str(roots[0]))
    monkeypatch.setenv("SLERP_ARENA_OUTPUTS", str(roots[1]))
    outside = str(tiny_models("llama", 1))
    for yaml_text in (tiny_yaml(outside, outside), tiny_yaml("../../etc/passwd", outside)):
        result = merge_tab.merge(yaml_text, "x", False, merge_tab.MergeSession(), progress=lambda *a, **k: None)
        assert "Merge failed" in result[0] and "outside the folders" in result[0]
    assert "outside the folders" in merge_tab.describe_parents("../../etc/passwd", "")[0]
    state = chat_session.ChatSession()
    with pytest.raises(gr.Error, match="no model is switched on"):
        list(chat_actions.chat("hi", "", 0.0, 1.0, 4, 0, "../../etc/passwd", "", "", True, False, False, "bf16", "bf16", state))
    assert "outside the folders" in state.arena.panes[0].notice
    # Output names cannot climb out of outputs/ either: they are sanitized to one folder name.
    inside = str(shutil.copytree(tiny_models("llama", 2), roots[0] / "llama"))
    summary, _, output, _ = merge_tab.merge(tiny_yaml(inside, inside), "../../etc/evil", False, merge_tab.MergeSession(),
                                            progress=lambda *a, **k: None)
    assert Path(output).parent == roots[1] and Path(output).name == "etc-evil"
    assert f"saved as `{roots[1].name}/etc-evil`" in summary  # the user is told, not silently renamed


def test_public_mode_size_limit_and_output_quota(roots, tiny_models):
    a = Path(shutil.copytree(tiny_models("llama", 1), roots[0] / "a"))
    config = parse_config(tiny_yaml(a, a))
    with pytest.raises(UserError, match="merges at most"):
        run_merge(config, roots[1] / "big", policy=AccessPolicy((roots[0],), roots[1], max_parents_bytes=1000))
    with pytest.raises(UserError, match="quota"):
        run_merge(config, roots[1] / "big", policy=AccessPolicy((roots[0],), roots[1], output_quota_bytes=1000))
    assert list(roots[1].iterdir()) == []


def test_pickle_checkpoints_are_refused_by_merge_and_chat(tiny_models, tmp_path):
    folder = Path(shutil.copytree(tiny_models("llama", 1), tmp_path / "pickled"))
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(UserError, match="pickle checkpoints are not loaded"):
        run_merge(parse_config(tiny_yaml(folder, tiny_models("llama", 2))), tmp_path / "out")
    with pytest.raises(UserError, match="pickle checkpoints are not loaded"):  # the same rule in chat
        load_model(str(folder), "bf16")


def test_different_hidden_sizes_are_refused(tiny_models, tmp_path):
    from testkit.tiny_models import build_tiny_model

    wide = build_tiny_model(tmp_path / "wide", "llama", 3, hidden=64)
    with pytest.raises(UserError, match="hidden_size differs"):
        run_merge(parse_config(tiny_yaml(tiny_models("llama", 1), wide)), tmp_path / "out")


def test_disk_full_mid_merge_leaves_nothing(tiny_models, tmp_path, monkeypatch):
    """The disk fills up after 20 kB: the error names the folder and the fix."""

    class FillingDisk:
        def __init__(self, handle):
            self.handle, self.written = handle, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 20_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.handle.write(data)

        def close(self):
            self.handle.close()

    original = StreamingWriter.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self._fh = FillingDisk(self._fh)

    monkeypatch.setattr(StreamingWriter, "__init__", init)
    with pytest.raises(UserError, match="disk under .* is full .* free disk space"):
        run_merge(parse_config(slices_config(tiny_models("llama", 1), tiny_models("llama", 2))), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_a_killed_merge_leaves_no_model_and_a_rerun_succeeds(tmp_path):
    from testkit.tiny_models import build_tiny_model

    a = build_tiny_model(tmp_path / "a", "llama", 1, hidden=512, num_layers=8)
    b = build_tiny_model(tmp_path / "b", "llama", 2, hidden=512, num_layers=8)
    config = tmp_path / "merge.yml"
    config.write_text(tiny_yaml(a, b))
    out = tmp_path / "outputs" / "merged"
    command = [sys.executable, "-m", "merging", str(config), str(out)]
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        shards = list((tmp_path / "outputs").glob(".merged.partial-*/*.safetensors"))
        if shards and shards[0].stat().st_size > 0:
            break
        time.sleep(0.002)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert shards, "the merge finished before it could be killed"
    assert not out.exists()
    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert (out / "model.safetensors").is_file()
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["merged"]  # the dead run's folder is gone


def test_bad_input_through_the_api_leaves_the_app_serving(served_app, tiny_models):
    client = Client(served_app, verbose=False)
    refused, *_ = client.predict("merge_method: ties\nmodels: [{model: a}, {model: b}]\nbase_model: a\nparameters: {t: 0.5}",
                                 "bad", False, api_name="/merge")
    assert refused.startswith("### ❌ Merge failed\nmerge_method:")  # the page's failed state, over the API too
    with pytest.raises(Exception, match="empty message"):
        client.predict("   ", "", 0.0, 1.0, 4, 0, "", str(tiny_models("llama", 1)), "", False, True, False, "bf16", "bf16",
                       api_name="/chat")
    a = str(tiny_models("llama", 1))
    summary, *_ = client.predict(tiny_yaml(a, a), "good", False, api_name="/merge")
    assert "Merged into" in summary
    # The page's Max RAM box is the API's fourth argument: it reaches the merge.
    refused, *_ = client.predict(tiny_yaml(a, a), "small", False, "10MB", api_name="/merge")
    assert refused.startswith("### ❌ Merge failed\nMax RAM: 10 MB is less than the")


@pytest.fixture(params=["local", "zerogpu"])
def queue_of(request, isolated_app, monkeypatch):
    """The app served with the queue it gets here, and with the one it gets on a ZeroGPU Space:
    Gradio reads SPACES_ZERO_GPU when the queue is made (at most 1 waiting event unless the
    app sizes it). Only the queue sees the variable: the rest of the app stays off ZeroGPU."""
    monkeypatch.setenv("SPACES_ZERO_GPU", "true" if request.param == "zerogpu" else "")
    demo = isolated_app.queued(isolated_app.build_app())
    monkeypatch.delenv("SPACES_ZERO_GPU")
    _, url, _ = demo.launch(prevent_thread_lock=True, show_error=True, quiet=True)
    yield url
    demo.close()


def test_four_chatting_clients_and_a_merge_do_not_mix(queue_of, tiny_models, request, monkeypatch):
    """Four visitors chat and a fifth merges, all at once: none is told the app is busy, and
    each sees only its own conversation. Here the chats stream beside each other (their
    replies share the decode steps); on ZeroGPU, where each is a GPU call of its own, they
    wait their turn and see their place in the queue."""
    a, b = str(tiny_models("llama", 1)), str(tiny_models("llama", 2))
    # When each visitor's replies run, as the app runs them (the app is in this process): a
    # client's view of its job's status comes late, so two clients' views could overlap
    # where the app ran one chat after the other.
    spans: list[tuple[str, float, float]] = []
    real = generation.generate_reply

    def timed(*args, conversation: str = "", **kwargs):
        start = time.monotonic()
        try:
            return real(*args, conversation=conversation, **kwargs)
        finally:
            spans.append((conversation.split("/")[0], start, time.monotonic()))

    monkeypatch.setattr(generation, "generate_reply", timed)
    clients = [Client(queue_of, verbose=False) for _ in range(5)]
    jobs = [c.submit(f"message from client {i}", "", 0.0, 1.0, 24, 0, "", a, b, False, True, True, "bf16", "bf16", api_name="/chat")
            for i, c in enumerate(clients[:4])]
    merge_job = clients[4].submit(tiny_yaml(a, b), "concurrent-merge", False, api_name="/merge")
    ranks = set()
    deadline = time.monotonic() + 300
    while not all(j.done() for j in [*jobs, merge_job]) and time.monotonic() < deadline:
        ranks |= {status.rank for status in (job.status() for job in jobs) if status.rank is not None}
        time.sleep(0.05)
    assert all(j.done() for j in [*jobs, merge_job]), "deadlock: jobs did not finish"
    # The most visitors whose replies were decoding at one moment (each visitor's panes count once).
    at_once = max(len({who for who, start, end in spans if start <= moment < end}) for _, moment, _ in spans)
    assert [str(j.exception()) for j in [*jobs, merge_job] if j.exception()] == []  # none refused as "busy"
    if request.node.callspec.params["queue_of"] == "zerogpu":
        assert at_once == 1 and max(ranks, default=0) >= 1  # one GPU call at a time; visitors see their place
    else:
        assert at_once >= 2  # chats stream together, not in a queue
    for i, job in enumerate(jobs):
        _, a_chat, b_chat, *_ = job.outputs()[-1]
        for history in (a_chat, b_chat):
            assert [text_of(m) for m in history if m["role"] == "user"] == [f"message from client {i}"]
    assert "Merged into" in merge_job.outputs()[-1][0]
    # Each client keeps its own history: a second message lands after its own first one only.
    second = clients[0].submit("second from client 0", "", 0.0, 1.0, 4, 0, "", a, b, False, True, False, "bf16", "bf16",
                               api_name="/chat")
    _, a_chat, *_ = second.result()
    assert [text_of(m) for m in a_chat if m["role"] == "user"] == ["message from client 0", "second from client 0"]


@pytest.mark.skipif(not native.supported_targets(), reason="no AVX2 target on this machine: torch only")
def test_a_cached_kernel_that_will_not_load_is_built_again(tmp_path, monkeypatch):
    """A truncated or foreign .so in the kernel cache once meant torch's slow path for good
    (ctypes raised; the file stayed). Each step runs in a fresh process: dlopen reuses a
    library already loaded under the same path."""
    monkeypatch.setenv("SLERP_ARENA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(native.KERNELS_ENV, raising=False)  # the cache's mechanics, with SLERP_ARENA_KERNELS=torch too
    (tmp_path / "answer.c").write_text("int answer(void) { return 42; }\n")
    script = ("import sys; from pathlib import Path; from core import native; "
              "lib = native.build('answer', [Path(sys.argv[1])], []); print(lib.answer(), lib._name)")
    first = subprocess.run([sys.executable, "-c", script, str(tmp_path / "answer.c")], capture_output=True, text=True, check=True,
                           cwd=Path(__file__).parent.parent)
    answer, library = first.stdout.split()
    assert answer == "42"
    Path(library).write_bytes(b"half a library")
    again = subprocess.run([sys.executable, "-c", script, str(tmp_path / "answer.c")], capture_output=True, text=True, check=True,
                           cwd=Path(__file__).parent.parent)
    assert again.stdout.split() == ["42", library]
