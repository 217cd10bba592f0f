"""ZeroGPU: the GPU boundaries run in the real `spaces` package's forked workers, with
their requested duration, their values pickled both ways; Stop ends a worker's generation;
a call over the visitor's quota is refused in the visitor's words. The device API is the
stand-in in testkit/zerogpu_device.py; everything between it and our code is spaces 0.51.3."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import sys
import time

import gradio as gr
import pytest
import torch
from gradio.context import LocalContext
from helpers import on_zerogpu, peaked, tiny_yaml

from core import zerogpu
from core.errors import UserError
from evaluation import sweep
from evaluation.prompt_set import DEMO_PROMPTS, read_prompts
from inference import ModelCache, cache, generation, replies
from inference.generation import GenerationSettings
from inference.replies import PaneRequest, RepliesRequest
from merging import parse_config
from merging.merge import MergeCancelled
from testkit.zerogpu_device import SPACE, token_for
from ui import sweep_panel
from ui.context import CancelSession

GREEDY = GenerationSettings(temperature=0, max_new_tokens=24, repetition_penalty=1.0)
HISTORY = ({"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi — how can I help? ✨"},
           {"role": "user", "content": "What is the capital of France?"})


def where(x):
    return os.getpid(), x + 1


def where_each(x):
    yield os.getpid(), x
    yield os.getpid(), x + 1


@pytest.fixture
def space(monkeypatch):
    """on_zerogpu(), with a model cache of its own on the CPU, filled here before each call
    as the app fills it."""
    monkeypatch.setattr(cache, "MODELS", ModelCache(torch.device("cpu")))
    with on_zerogpu() as device:
        yield device


@pytest.fixture
def reply_log(tmp_path, monkeypatch):
    """Every reply generated, in whichever process: (pid, tokens, stopped, text, when it
    ended), read back from a file, since nothing a forked worker keeps in memory comes back."""
    log, real = tmp_path / "replies.jsonl", generation.generate_reply

    def logged(*args, **kwargs):
        reply = real(*args, **kwargs)
        with log.open("a") as out:
            out.write(json.dumps({"pid": os.getpid(), "tokens": reply.stats.new_tokens, "stopped": reply.stopped,
                                  "text": reply.text, "ended": time.time()}) + "\n")
        return reply

    monkeypatch.setattr(generation, "generate_reply", logged)
    return lambda: [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@contextlib.contextmanager
def visitor(user: str | None, auth: str | None = None):
    """The Gradio request spaces reads the visitor from (their X-IP-Token), as a page's call
    brings it; None: a call with no token."""
    headers = {"x-gradio-user": "app", **({"x-ip-token": token_for(user, auth)} if user else {})}
    reset = LocalContext.request.set(gr.Request(headers=headers))
    try:
        yield
    finally:
        LocalContext.request.reset(reset)


def test_off_zerogpu_functions_run_here_and_spaces_is_never_imported(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    zerogpu.forget_wrappers()
    assert zerogpu.gpu(60)(where)(1) == (os.getpid(), 2)
    assert list(zerogpu.gpu(60)(where_each)(1)) == [(os.getpid(), 1), (os.getpid(), 2)]
    assert not zerogpu.on_zerogpu() and "spaces" not in sys.modules


def test_on_zerogpu_each_call_runs_in_a_forked_worker_with_its_duration(space):
    assert zerogpu.gpu(30)(where)(1) == (space.pids[0], 2) != (os.getpid(), 2)
    assert [v for _, v in zerogpu.gpu(lambda x: 10 * x)(where_each)(4)] == [4, 5]  # a duration computed from the call
    assert [params["durationSeconds"] for path, params in space.calls if path == "/schedule"] == ["30", "40"]
    assert [path for path, _ in space.calls] == ["/schedule", "/allow", "/release"] * 2 and os.getpid() not in space.pids


def test_stream_replies_streams_from_a_forked_worker_what_it_streams_here(space, tiny_models, reply_log):
    ref = str(tiny_models("llama", 1))
    request = RepliesRequest((PaneRequest(ref, "bf16", HISTORY), PaneRequest(ref, "bf16", HISTORY[-1:])), GREEDY, "Be brief.")
    cache.MODELS.get(ref, "bf16")  # loaded here: the worker finds it in the memory it inherits
    here = list(replies.stream_replies.__wrapped__(request))
    there = list(replies.stream_replies(request))
    assert len(there) > 1 and all(r.done for r in there[-1]) and not any(r.error for r in there[-1])
    assert [r.text for r in there[-1]] == [r.text for r in here[-1]] and all(r.text for r in here[-1])
    assert [r.stats.new_tokens for r in there[-1]] == [r.stats.new_tokens for r in here[-1]]
    logged = reply_log()
    assert [entry["pid"] for entry in logged] == [os.getpid()] * 2 + space.pids * 2 and space.pids[0] != os.getpid()
    assert ("/schedule", str(replies.seconds_needed(request))) in [(p, q.get("durationSeconds")) for p, q in space.calls]


def test_stop_ends_the_workers_generation_at_once(space, tiny_models, reply_log, monkeypatch):
    """Closing the stream (Stop) sets the worker's stop event; its generation ends within a
    token or two, not at max_new_tokens. Each token is paced at 20 ms, as a bigger model's."""
    real_put = generation._ReplyStreamer.put

    def paced(self, value):
        time.sleep(0.02)
        real_put(self, value)

    monkeypatch.setattr(generation._ReplyStreamer, "put", paced)
    ref = str(tiny_models("llama", 1))
    settings = GenerationSettings(temperature=0, max_new_tokens=200, min_new_tokens=200, repetition_penalty=1.0)
    cache.MODELS.get(ref, "bf16")
    stream = replies.stream_replies(RepliesRequest((PaneRequest(ref, "bf16", HISTORY),), settings))
    for snapshot in stream:
        if snapshot[0].stats.new_tokens >= 3:
            break
    closing = time.time()
    stream.close()
    closed = time.time()
    (ended,) = reply_log()
    assert ended["pid"] == space.pids[0] != os.getpid() and ended["stopped"]
    assert ended["tokens"] < 40 and ended["ended"] - closing < 1.0 and closed - closing < 2.0, (ended, closed - closing)
    assert [path for path, _ in space.calls] == ["/schedule", "/allow", "/release"]


@pytest.mark.parametrize(("user", "auth", "problem", "fix"), [
    ("ann", None, "this needs up to {needed} s of GPU time and your ZeroGPU quota has 5 s left",
     "sign in with Hugging Face for more GPU time, wait about 24 h for it to refill, or use an endpoint pane"),
    ("bob", "regular", "this needs up to {needed} s of GPU time and your ZeroGPU quota has 5 s left",
     "wait about 24 h for it to refill, or use an endpoint pane"),
    (None, None, "this Space has used up the GPU time it gives visitors who are not signed in",
     "sign in with Hugging Face to use your own quota, try again later, or use an endpoint pane"),
], ids=["signed out", "free account", "no token"])
def test_a_request_over_the_visitors_quota_is_refused_in_their_words(space, tiny_models, user, auth, problem, fix):
    ref = str(tiny_models("llama", 1))
    request = RepliesRequest((PaneRequest(ref, "bf16", HISTORY),), GREEDY)
    cache.MODELS.get(ref, "bf16")
    space.set_left(user or SPACE, 5, auth)
    with visitor(user, auth), pytest.raises(UserError) as refused:
        next(replies.stream_replies(request))
    needed = replies.seconds_needed(request)
    assert needed > 5 and refused.value.field == "GPU quota" and refused.value.problem == problem.format(needed=needed)
    assert refused.value.fix.startswith(fix), refused.value.fix
    assert [path for path, _ in space.calls] == ["/schedule"] and space.pids == [] and space.left(user or SPACE) == 5
    space.set_left(user or SPACE, needed, auth)  # enough again: admitted
    with visitor(user, auth):
        assert list(replies.stream_replies(request))[-1][0].done


def test_a_user_error_in_the_worker_reaches_the_caller_as_itself(space, tiny_models):
    ref = str(tiny_models("llama", 1))
    cache.MODELS.get(ref, "bf16")
    with pytest.raises(UserError, match=r"^models: 5 models selected — choose 1 to 4$"):
        list(replies.stream_replies(RepliesRequest((PaneRequest(ref, "bf16", HISTORY),) * 5, GREEDY)))
    assert len(space.pids) == 1  # raised there, not here


def test_the_t_sweep_streams_from_a_worker_and_cancel_closes_it(tiny_models, tmp_path):
    """The Merge tab's sweep through its boundary: the points it finds in-process, its
    progress from the worker; a Cancel at the first step closes the stream there."""
    pair = peaked(tiny_models("llama", 1), tmp_path / "a"), peaked(tiny_models("llama", 2), tmp_path / "b")
    request = sweep.SweepRequest(parse_config(tiny_yaml(*pair)), tuple(read_prompts(DEMO_PROMPTS, "prompts")[:2]), (0.0, 1.0),
                                 max_new_tokens=6)
    here = list(sweep.sweep_stream(request))[-1]
    with on_zerogpu() as space:
        stages = []
        status, _, rows, samples = sweep_panel.run_sweep(request, CancelSession(), progress=lambda f, desc="": stages.append(desc))
        assert status.startswith("### ✅ t-sweep: 2 prompts × 2 values of t") and stages[-1].endswith(" · 10/10")
        assert list(rows["resemblance to B"]) == [f"{p.resemblance_b:.0%}" for p in here]
        assert samples == sweep_panel.samples(list(here), request.prompts[0].text)
        assert [p for p, _ in space.calls] == ["/schedule", "/allow", "/release"] and os.getpid() not in space.pids
        assert space.calls[0][1]["durationSeconds"] == str(sweep.sweep_seconds(request))
        session = CancelSession()
        status, *_ = sweep_panel.run_sweep(request, session, progress=lambda f, desc="": sweep_panel.cancel(session))
        assert status == sweep_panel.CANCELLED and [p for p, _ in space.calls][3:] == ["/schedule", "/allow", "/release"]


def round_trips(value) -> bool:
    return pickle.loads(pickle.dumps(value)) == value


def test_everything_that_crosses_the_boundary_pickles_equal(tiny_models, monkeypatch):
    """Arguments go to the worker and each yielded value comes back pickled: the chat's and
    the t-sweep's requests, every snapshot and event a real stream yields, and the errors."""
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    monkeypatch.setattr(cache, "MODELS", ModelCache(torch.device("cpu")))
    a, b = str(tiny_models("llama", 1)), str(tiny_models("llama", 2))
    settings = GenerationSettings(temperature=0.7, top_p=0.8, top_k=5, max_new_tokens=12, repetition_penalty=1.1, seed=3)
    request = RepliesRequest((PaneRequest(a, "bf16", HISTORY), PaneRequest(b, "int8", HISTORY[-1:])), settings, "Be brief.")
    assert round_trips(settings) and round_trips(request)
    snapshots = list(replies.stream_replies(request))
    assert len(snapshots) > 1 and all(round_trips(s) for s in snapshots) and all(round_trips(r.stats) for r in snapshots[-1])
    sweep_request = sweep.SweepRequest(parse_config(f"models:\n  - model: {a}\n  - model: {b}\nmerge_method: slerp\nbase_model: {a}\n"
                                                    "parameters:\n  t: [0, 0.5, 1]\ndtype: bfloat16\n"),
                                       tuple(read_prompts(DEMO_PROMPTS, "prompts")[:2]), (0.0, 1.0), True, max_new_tokens=4)
    assert round_trips(sweep_request)
    events = list(sweep.sweep_stream(sweep_request))
    assert isinstance(events[-1], tuple) and len(events[-1]) == 2 and all(round_trips(e) for e in events)
    for error in (UserError("GPU quota", "5 s left", "wait"), MergeCancelled()):
        back = pickle.loads(pickle.dumps(error))
        assert (type(back), str(back), back.field, back.problem, back.fix) == (type(error), str(error), error.field, error.problem,
                                                                               error.fix)
