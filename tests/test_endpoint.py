"""Endpoint panes against a real `transformers serve` on 127.0.0.1 (one server for the
module), through the Chat tab's handlers and the chat CLI: side by side with an
in-process pane, Stop, a dead port, public mode's allow-list, blind mode."""

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import openai
import pytest
from helpers import run_main, unpack

from arena import chat_session
from arena.leaks import names_of
from core.errors import UserError
from core.policy import check_models
from core.sources import resolve_model
from inference import ModelCache, cache, endpoint
from inference.__main__ import main
from inference.endpoint import EndpointModel
from inference.generation import GenerationSettings, Reply
from testkit.browser import free_port
from ui import chat_actions

pytestmark = pytest.mark.usefixtures("isolated_app")
QUESTION = "What is the capital of France?"
IN_PROCESS = "bundled:SmolLM2-135M-Instruct"
SERVER_START_S = 180  # a loaded 2-core machine: imports and the model load take a while


@pytest.fixture(scope="session")
def server(smollm2_dir, tmp_path_factory):
    """`transformers serve` on the bundled model's converted safetensors folder; yields
    (port, the pane reference). Killed at the end."""
    port = free_port()
    log = (tmp_path_factory.mktemp("serve") / "serve.log").open("w+")
    # One torch thread: the in-process pane generates at the same time on the same 2 cores.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([str(Path(sys.executable).with_name("transformers")), "serve", str(smollm2_dir),
                                "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
                               stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + SERVER_START_S
        while True:
            assert process.poll() is None, f"transformers serve exited: {log.seek(0) or log.read()[-2000:]}"
            assert time.time() < deadline, "transformers serve did not answer /health in time"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        yield port, f"http://127.0.0.1:{port}/v1#{smollm2_dir}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def ask(state, merged="", parent_a="", parent_b="", message=QUESTION, tokens=8, temperature=0.0):
    """The chat handler's views as they stream, each as (three histories, three stats
    lines) copied at once: the views hold the live history objects."""
    on = [bool(merged), bool(parent_a), bool(parent_b)]
    return [unpack(view) for view in
            chat_actions.chat(message, "", temperature, 1.0, tokens, 0, merged, parent_a, parent_b, *on, "bf16", "bf16", state)]


def test_an_endpoint_pane_answers_beside_an_in_process_pane(server):
    port, endpoint = server
    state = chat_session.ChatSession()
    views = ask(state, parent_a=IN_PROCESS, parent_b=endpoint)
    (_, local, served), (_, local_stats, served_stats) = views[-1]
    assert "Paris" in local[-1]["content"] and "Paris" in served[-1]["content"], (local, served)
    assert "bf16" in local_stats and "served by" not in local_stats
    assert f"served by 127.0.0.1:{port}" in served_stats and "first token" in served_stats and "tok/s" in served_stats
    growing = [chats[2][1]["content"] for chats, _ in views if len(chats[2]) == 2]
    assert len(set(growing)) >= 3, growing  # streamed chunk by chunk, not one final answer
    # The in-process pane keeps its KV cache for the next turn; the endpoint's is on its server.
    kept = cache.MODELS.peek(IN_PROCESS, "bf16").decoder.scheduler.kept.conversations()
    assert f"{state.arena.name}/Parent A" in kept and f"{state.arena.name}/Parent B" not in kept, kept


def test_stop_closes_the_stream_and_keeps_the_partial_reply(server, monkeypatch):
    _, endpoint = server
    closed = []
    real_close = openai.Stream.close

    def close(self):
        real_close(self)
        closed.append(self.response.is_closed)

    monkeypatch.setattr(openai.Stream, "close", close)
    state = chat_session.ChatSession()
    views = []
    thread = threading.Thread(target=lambda: views.extend(ask(state, parent_b=endpoint, tokens=200, temperature=0.7,
                                                                message="Tell me a long story about a dragon.")))
    thread.start()
    pane = state.arena.pane("Parent B")
    deadline = time.time() + 120
    while not (len(pane.history) == 2 and len(pane.history[1]["content"]) > 10):
        assert time.time() < deadline and thread.is_alive(), "no streamed text"
        time.sleep(0.05)
    chat_actions.stop_replies("", state)
    thread.join(60)
    assert not thread.is_alive() and closed == [True]  # the HTTP response is closed: the server stops generating
    (_, _, chat), (_, _, stats) = views[-1]
    assert len(chat[-1]["content"]) > 10 and not chat[-1]["content"].startswith("⚠️")
    assert "stopped" in stats and "served by" in stats and "tok/s" in stats
    assert pane.turns[-1].stopped and pane.turns[-1].tokens < 200


def test_a_dead_port_fails_in_its_pane_while_the_others_answer(server):
    dead = f"http://127.0.0.1:{free_port()}/v1#anything"
    state = chat_session.ChatSession()
    (merged, local, broken), (_, local_stats, _) = ask(state, merged=server[1], parent_a=IN_PROCESS, parent_b=dead, tokens=4)[-1]
    message = broken[-1]["content"]
    assert message.startswith("⚠️ model: could not connect to 127.0.0.1:") and "(connection refused)" in message
    assert "is the server up? Start it, or correct HOST:PORT" in message and "\n" not in message and "mid-reply" not in message
    assert merged[-1]["content"] and not merged[-1]["content"].startswith("⚠️")
    assert local[-1]["content"] and "tok/s" in local_stats


def test_blind_mode_hides_the_host_until_the_reveal(server):
    port, endpoint = server
    dead = f"http://127.0.0.1:{free_port()}/v1#anything"
    state = chat_session.ChatSession()
    chat_actions.set_blind(True, state)
    histories, stats = ask(state, merged=endpoint, parent_b=dead, tokens=3)[-1]
    shown = " ".join(stats) + " ".join(m["content"] for h in histories for m in h)
    assert "127.0.0.1" not in shown and "served by" not in shown and str(port) not in shown, shown
    refused, _, _ = chat_actions.submit_vote("tie", "", False, state)  # a dead pane would count as beaten
    assert "a model failed in this round, so it cannot be judged" in refused.note and not state.arena.revealed
    chat_actions.clear_chat(state)
    ask(state, merged=endpoint, tokens=3)
    view, _, _ = chat_actions.submit_vote("tie", "", False, state)
    histories, stats = unpack(view)
    assert any(f"served by 127.0.0.1:{port}" in s for s in stats), stats


def test_public_mode_allows_only_listed_endpoints(server, monkeypatch):
    port, endpoint = server
    unlisted = f"http://127.0.0.1:{free_port()}/v1#anything"
    monkeypatch.setenv("SLERP_ARENA_PUBLIC", "1")
    monkeypatch.setenv("SLERP_ARENA_ENDPOINTS", f"HTTP://127.0.0.1:{port}/v1/ , https://example.org/v1")
    state = chat_session.ChatSession()
    (_, refused, allowed), (_, refused_stats, allowed_stats) = ask(state, parent_a=unlisted, parent_b=endpoint, tokens=2)[-1]
    assert refused == [] and "is not on this Space's allow-list" in refused_stats
    assert f"use one of: http://127.0.0.1:{port}/v1, https://example.org/v1" in refused_stats and "\n" not in refused_stats
    assert allowed[-1]["content"] and f"served by 127.0.0.1:{port}" in allowed_stats
    monkeypatch.delenv("SLERP_ARENA_ENDPOINTS")
    with pytest.raises(UserError, match="this Space allows no endpoints"):
        check_models(endpoint)
    monkeypatch.setenv("SLERP_ARENA_PUBLIC", "0")
    check_models(unlisted)  # the owner's own app: any endpoint


def test_cli_chat_through_an_endpoint(server, capsys):
    port, endpoint = server
    code, out, err = run_main(main, ["chat", endpoint, "--prompt", QUESTION, "--max-new-tokens", 8], capsys)
    assert code == 0 and "Paris" in out and f"served by 127.0.0.1:{port}" in out, (out, err)
    code, out, _ = run_main(main, ["chat", f"http://127.0.0.1:{free_port()}/v1#x", "--prompt", "hi"], capsys)
    assert code == 1 and "error: model: could not connect to 127.0.0.1:" in out
    code, out, _ = run_main(main, ["chat", f"http://127.0.0.1:{port}/v1#not-served-here", "--prompt", "hi"], capsys)
    assert code == 1 and "answered 400" in out and "check the model name after '#'" in out


def test_a_server_that_never_answers_times_out_in_its_pane(capsys, monkeypatch):
    monkeypatch.setenv("SLERP_ARENA_ENDPOINT_TIMEOUT", "1")
    with socket.socket() as silent:  # accepts connections (the kernel's backlog) and never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        code, out, _ = run_main(main, ["chat", f"http://127.0.0.1:{port}/v1#m", "--prompt", "hi"], capsys)
    assert code == 1 and f"error: model: 127.0.0.1:{port} did not answer in 1 s — the server may be overloaded" in out
    assert "SLERP_ARENA_ENDPOINT_TIMEOUT" in out and "mid-reply" not in out


def answer_within(ref: str, seconds: float, **settings) -> tuple[Reply, float]:
    """An endpoint's reply, run in a thread that must end within `seconds`: a timeout that is
    not applied fails the test instead of hanging it."""
    replies = []
    started = time.perf_counter()
    thread = threading.Thread(target=lambda: replies.append(EndpointModel.of(ref).answer(
        [{"role": "user", "content": "hi"}], GenerationSettings(**settings), threading.Event())), daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"no reply within {seconds} s: the timeout was not applied"
    return replies[0], time.perf_counter() - started


class ScriptedServer:
    """An OpenAI-compatible endpoint on 127.0.0.1 that answers every request with the same
    streamed chunks, `gap` seconds apart, then either ends the stream or stalls (holds the
    connection open, sending nothing) until closed."""

    def __init__(self, pieces: list[str], gap: float, stall: bool):
        self.pieces, self.gap, self.stall = pieces, gap, stall
        self.closing = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.ref = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1#m"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        with contextlib.suppress(OSError):
            while True:
                connection, _ = self.listener.accept()
                threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket):
        with connection, contextlib.suppress(OSError):
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(65536)
            connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n")
            for piece in self.pieces:
                chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
                         "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                connection.sendall(f"data: {json.dumps(chunk)}\n\n".encode())
                if self.closing.wait(self.gap):
                    return
            if self.stall:
                self.closing.wait()
            else:
                connection.sendall(b"data: [DONE]\n\n")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.closing.set()
        self.listener.close()


def test_a_server_that_never_accepts_fails_the_pane_within_the_connect_timeout(monkeypatch):
    monkeypatch.setattr(endpoint, "CONNECT_TIMEOUT_S", 1.0)
    monkeypatch.setenv("SLERP_ARENA_ENDPOINT_TIMEOUT", "30")  # the wait for an answer, which must not apply here
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        # One connection fills a backlog of 0; the kernel then drops the next one's SYNs, so it never connects.
        with socket.create_connection(full.getsockname(), timeout=5):
            host = f"127.0.0.1:{full.getsockname()[1]}"
            reply, seconds = answer_within(f"http://{host}/v1#m", 10)
    assert seconds < 4, seconds  # 1 s to connect; the SDK's own default is 5 s, the read timeout 30 s
    assert reply.error == f"model: could not connect to {host} in 1 s — is the server up? Start it, or correct HOST:PORT in the model field"


def test_a_server_that_stalls_mid_reply_fails_the_pane_within_the_chunk_timeout(monkeypatch):
    monkeypatch.setenv("SLERP_ARENA_ENDPOINT_TIMEOUT", "1")
    with ScriptedServer(["Hello", " there"], gap=0.2, stall=True) as server:
        reply, seconds = answer_within(server.ref, 10)
    assert seconds < 4, seconds  # two chunks, then 1 s of nothing
    assert reply.text == "Hello there" and reply.done
    assert reply.error.startswith(f"model: {server.ref[7:-5]} stopped mid-reply: nothing for 1 s — the server may be overloaded")


def test_a_slow_but_steady_server_is_not_cut_by_the_chunk_timeout(monkeypatch):
    monkeypatch.setenv("SLERP_ARENA_ENDPOINT_TIMEOUT", "1")
    pieces = ["one", " two", " three", " four", " five", " six"]
    with ScriptedServer(pieces, gap=0.5, stall=False) as server:
        reply, seconds = answer_within(server.ref, 20)
    assert seconds > 2.5 and reply.error == "" and reply.text == "".join(pieces)  # 3 s in all, never 1 s without a chunk


def test_an_unreadable_timeout_setting_is_named_in_the_pane(monkeypatch):
    monkeypatch.setenv("SLERP_ARENA_ENDPOINT_TIMEOUT", "soon")
    reply, _ = answer_within(f"http://127.0.0.1:{free_port()}/v1#m", 10)
    assert reply.error == "SLERP_ARENA_ENDPOINT_TIMEOUT: 'soon' is not a number of seconds — set it to a positive number, e.g. 60"


def test_an_endpoint_is_chat_only_and_never_loaded_here(server):
    _, endpoint = server
    with pytest.raises(UserError, match="names no model — add the served model's name after '#'"):
        ModelCache().get(endpoint.split("#")[0])
    with pytest.raises(UserError, match="its weights stay on its server — merge local folders or Hub ids"):
        resolve_model(endpoint)
    cache = ModelCache(memory_budget=1)  # no room at all: the memory guard does not apply to a served model
    assert cache.get(endpoint).served_by.startswith("127.0.0.1:") and cache.loaded() == []
    assert "SmolLM2-135M-Instruct" in names_of([endpoint])  # a blind reply naming it is flagged
