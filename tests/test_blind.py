"""Blind rounds through the Chat tab's handlers: anonymous until the vote, a new mapping
per round, explicit votes, flags, results, the model card section, export; and a chat
loop that loses nothing (queued messages, Clear and Regenerate mid-reply, seeds)."""

import json
import re
import threading
import time
from pathlib import Path

import gradio as gr
import pytest
from helpers import tiny_yaml, unpack

from core.errors import UserError
from inference import generation
from ui import chat_tab, merge_tab
from ui.arena import ArenaSession, Turn, vote
from ui.votes import VoteStore, config_hash

pytestmark = pytest.mark.usefixtures("isolated_app")
REVEALING = re.compile(r"int8|bf16|fp8|fp32|torch|MB|tok/s|first token|Merged|Parent|llama", re.IGNORECASE)


def merged_pair(tiny_models) -> tuple[str, str, str]:
    a, b = str(tiny_models("llama", 1)), str(tiny_models("llama", 2))
    output = merge_tab.merge(tiny_yaml(a, b), "blind", False, merge_tab.MergeSession(), progress=lambda *x, **k: None)[2]
    return output, a, b


def say(state, output, a, b, message="hello", tokens=6, seed=0):
    return list(chat_tab.chat(message, "", 0.7, 1.0, tokens, seed, output, a, b, True, True, True, "int8", "bf16", state))


def slowed(monkeypatch, seconds=0.05):
    """Replies decode one piece of text per `seconds`, so a test can act mid-reply. The
    decoding itself is slowed: slowing the snapshots let the replies run ahead and end
    within a few of them (folded together), and a "mid-reply" Send came after the end."""
    real = generation.generate_reply

    def slow(*args, on_text=None, **kwargs):
        def slow_text(text):
            time.sleep(seconds)
            on_text(text)
        return real(*args, on_text=slow_text if on_text else None, **kwargs)

    monkeypatch.setattr(generation, "generate_reply", slow)


def test_blind_round_is_anonymous_until_an_explicit_vote(tiny_models):
    output, a, b = merged_pair(tiny_models)
    state = chat_tab.ChatSession()
    view = chat_tab.set_blind(True, state)
    assert [bot.label for bot in view[:3]] == ["Model 1", "Model 2", "Model 3"] and view[6].visible is False
    final = say(state, output, a, b)[-1]
    _, stats = unpack(final)
    assert final[6].visible is True and all(re.fullmatch(r"6 tokens · seed 0", s) for s in stats), stats
    refused = [("", "", "nothing chosen"), ("", "Model 1", "nothing chosen"), ("Model 2", "Model 2", "both best and worst"),
               ("all bad", "Model 1", "has no worst")]
    for best, worst, problem in refused:
        assert problem in chat_tab.submit_vote(best, worst, False, state)[-1]
    md = Path(chat_tab.export_session(state).value[0]["path"]).read_text()  # before the reveal: anonymous
    assert "Model 1" in md and not REVEALING.search(md.replace("Slerp Arena", "")) and output not in md and a not in md, md
    shown_first = state.arena.panes[0].label
    view = chat_tab.submit_vote("Model 1", "Model 3", False, state)
    assert view[0].label == f"Model 1 = {shown_first}" and view[6].visible is False
    _, stats = unpack(view)
    assert all("tok/s" in s and "MB" in s for s in stats)  # speed and memory after the reveal
    plot, table, note = view[-3:]
    assert "<svg" in plot and "1 votes" in table and config_hash(output) in table and "Vote recorded" in note
    assert "already judged" in chat_tab.submit_vote("Model 2", "", False, state)[-1]


def test_each_round_draws_a_new_mapping_and_resets_the_vote(tiny_models):
    output, a, b = merged_pair(tiny_models)
    state = chat_tab.ChatSession()
    chat_tab.set_blind(True, state)
    mappings = []
    for _ in range(10):
        first = say(state, output, a, b, tokens=2)[1]  # the first view after the round started
        assert first[7].value is None and first[8].value is None  # best / worst reset
        assert [bot.label for bot in first[:3]] == ["Model 1", "Model 2", "Model 3"]
        mappings.append(tuple(p.label for p in state.arena.panes))
        chat_tab.submit_vote("tie", "", False, state)
        chat_tab.clear_chat(state)
    assert len(set(mappings)) > 1, mappings
    assert VoteStore(Path(chat_tab.context.votes_path())).count() == 10


def blind_session(replies: dict[str, str], refs: dict[str, str]) -> ArenaSession:
    session = ArenaSession(blind=True, revealed=False)
    for pane in session.panes:
        pane.ref = refs[pane.label]
        pane.history = [{"role": "user", "content": "who are you?"}, {"role": "assistant", "content": replies[pane.label]}]
        pane.turns = [Turn("who are you?", {"seed": 3}, done=True)]
    return session


def test_a_reply_naming_a_model_flags_the_vote(tmp_path):
    store = VoteStore(tmp_path / "v.sqlite")
    refs = {"Merged": str(tmp_path / "merge"), "Parent A": "bundled:SmolLM2-135M-Instruct", "Parent B": str(tmp_path / "pirate-parent")}
    clean = blind_session(dict.fromkeys(refs, "I am a helpful assistant."), refs)
    assert vote(clean, store, "Model 1", "", "h", [refs["Parent A"], refs["Parent B"]]) == ""
    leaky = blind_session({"Merged": "hi", "Parent A": "I am SmolLM, made by Hugging Face.", "Parent B": "yo"}, refs)
    assert "Parent A's reply names 'SmolLM'" in vote(leaky, store, "Model 1", "", "h", [refs["Parent A"], refs["Parent B"]])
    folder = blind_session({"Merged": "hi", "Parent A": "ok", "Parent B": "Arr, pirate-parent at your service"}, refs)
    assert "pirate-parent" in vote(folder, store, "tie", "", "h", [refs["Parent A"], refs["Parent B"]])
    assert [bool(v.flagged) for v in store.votes("h")] == [False, True, True]


def test_arena_results_go_into_the_model_card_once(tiny_models):
    output, a, b = merged_pair(tiny_models)
    with pytest.raises(gr.Error, match="no counted votes"):
        chat_tab.add_results_to_card(output, False)
    store = VoteStore(Path(chat_tab.context.votes_path()))
    for _ in range(30):
        store.record(config_hash(output), "q", [("best", "Merged"), ("worst", "Parent B")], {"Merged": output, "Parent A": a,
                     "Parent B": b}, {}, {"seed": 0})
    plot, table = chat_tab.show_results(output, False)
    assert "<svg" in plot and "Merged beats Parent A in 97%" in table
    chat_tab.add_results_to_card(output, False)
    message = chat_tab.add_results_to_card(output, False)
    card = (Path(output) / "README.md").read_text()
    assert "30 votes" in message and card.count("## Arena results") == 1 and "| Merged vs Parent A | 97%" in card
    with pytest.raises(gr.Error, match="not a merge made here"):
        chat_tab.add_results_to_card(a, False)


def test_export_records_each_turns_settings_seed_and_stop(tiny_models):
    a = str(tiny_models("llama", 1))
    state = chat_tab.ChatSession()
    list(chat_tab.chat("hello", "", 0.0, 1.0, 4, 7, "", a, "", False, True, False, "bf16", "bf16", state))
    list(chat_tab.chat("again", "", 0.5, 1.0, 3, 9, "", a, "", False, True, False, "bf16", "bf16", state))
    md, js = [f["path"] for f in chat_tab.export_session(state).value]
    data = json.loads(Path(js).read_text())
    turns = data["panes"][1]["turns"]
    assert [(t["prompt"], t["settings"]["seed"], t["settings"]["max_new_tokens"], t["stopped"]) for t in turns] == [
        ("hello", 7, 4, False), ("again", 9, 3, False)]
    assert data["anonymized"] is False and data["panes"][1]["model"] == a
    assert "seed 7" in Path(md).read_text() and "temperature=0.5" in Path(md).read_text()


def run_in_thread(gen) -> tuple[threading.Thread, list]:
    views, errors = [], []

    def consume():
        try:
            views.extend(gen)
        except Exception as exc:  # noqa: BLE001 -- the test asserts there is none
            errors.append(exc)

    thread = threading.Thread(target=consume)
    thread.start()
    return thread, errors


def wait_for(condition, timeout=30.0):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def test_clear_mid_reply_stops_first_and_leaves_no_error(tiny_models, monkeypatch):
    slowed(monkeypatch)
    output, a, b = merged_pair(tiny_models)
    state = chat_tab.ChatSession()
    thread, errors = run_in_thread(chat_tab.chat("hello", "", 0.7, 1.0, 64, 0, output, a, b, True, True, True, "bf16", "bf16", state))
    wait_for(lambda: any(p.history and p.history[-1]["role"] == "assistant" and p.history[-1]["content"] for p in state.arena.panes))
    histories, stats = unpack(chat_tab.clear_chat(state))
    thread.join(30)
    assert not errors and histories == [[], [], []] and stats == ["", "", ""] and state.idle.is_set()
    assert all(p.history == [] for p in state.arena.panes)


def test_a_clear_waits_until_the_page_has_the_streams_end(tiny_models):
    """Gradio re-sends a stream's last view after the stream has ended; a Clear view sent
    before that was overwritten (a CI run of the Chromium test showed the old replies back
    for good). Clear returns only once the page's step after every stream begun has run,
    also when one stream's confirmation comes after the next stream has begun."""
    a = str(tiny_models("llama", 1))
    state = chat_tab.ChatSession()
    stream = chat_tab.page_stream(chat_tab.answer_pending)
    for message in ("hello", "again"):
        chat_tab.queue_message(message, state)
        views = list(stream("", 0.0, 1.0, 4, 0, "", a, "", False, True, False, "bf16", "bf16", state))
    assert unpack(views[-1])[0][1][-1]["content"] and state.idle.is_set()
    cleared = []
    thread = threading.Thread(target=lambda: cleared.append(chat_tab.clear_chat(state)))
    thread.start()
    for _ in range(2):
        thread.join(0.5)
        assert not cleared  # the threads have ended, but the page has not had every stream's end yet
        chat_tab.page_has_the_end(state)
    thread.join(10)
    assert unpack(cleared[0])[0] == [[], [], []]


def test_a_second_message_mid_reply_is_queued_not_lost(tiny_models, monkeypatch):
    slowed(monkeypatch)
    a = str(tiny_models("llama", 1))
    state = chat_tab.ChatSession()
    box, _ = chat_tab.queue_message("first", state)
    assert box == ""
    thread, errors = run_in_thread(chat_tab.answer_pending("", 0.7, 1.0, 16, 0, "", a, "", False, True, False, "bf16", "bf16", state))
    wait_for(lambda: state.arena.panes[1].history)
    box, pending = chat_tab.queue_message("second", state)
    assert box == "" and "second" in pending
    assert chat_tab.queue_message("  ", state) == (gr.skip(), gr.skip())  # refused with a warning; nothing queued
    thread.join(30)
    assert not errors and [m["content"] for m in state.arena.panes[1].history if m["role"] == "user"] == ["first", "second"]
    assert state.pending == []


def test_regenerate_mid_reply_stops_first_and_draws_a_new_seed(tiny_models, monkeypatch):
    slowed(monkeypatch)
    a = str(tiny_models("llama", 1))
    state = chat_tab.ChatSession()
    thread, errors = run_in_thread(chat_tab.chat("hello", "", 0.7, 1.0, 64, 5, "", a, "", False, True, False, "bf16", "bf16", state))
    wait_for(lambda: len(state.arena.panes[1].history) == 2 and state.arena.panes[1].history[1]["content"])
    chat_tab.stop_chat(state)  # what the Regenerate button does first
    views = list(chat_tab.regenerate_last("", 0.7, 1.0, 4, 5, False, state))
    thread.join(30)
    new_seed = views[-1][-1]
    assert not errors and new_seed != 5 and len(state.arena.panes[1].history) == 2
    assert state.arena.panes[1].turns[-1].settings["seed"] == new_seed and f"seed {new_seed}" in views[-1][4]
    locked = list(chat_tab.regenerate_last("", 0.7, 1.0, 4, 5, True, state))
    assert locked[-1][-1] == 5 and "seed 5" in locked[-1][4]


def test_vote_needs_a_blind_round_with_replies():
    with pytest.raises(UserError, match="blind rounds"):
        vote(ArenaSession(), VoteStore(Path(chat_tab.context.votes_path())), "Model 1", "", "h", [])


def test_a_stop_while_regenerate_waits_for_the_device_cancels_it(tiny_models):
    """The page's Regenerate waits for the running replies in a step of its own, then for
    the device; a Stop (or Clear) pressed in between once went unheard."""
    a = str(tiny_models("llama", 1))
    state = chat_tab.ChatSession()
    list(chat_tab.chat("hello", "", 0.0, 1.0, 4, 5, "", a, "", False, True, False, "bf16", "bf16", state))
    before = [dict(m) for m in state.arena.panes[1].history]
    chat_tab.stopped_replies(state)
    chat_tab.stop_chat(state)
    views = list(chat_tab.regenerate_stopped("", 0.7, 1.0, 4, 5, False, state))
    assert views == [tuple(gr.skip() for _ in range(11))] and state.arena.panes[1].history == before and state.idle.is_set()
    chat_tab.stopped_replies(state)  # no Stop this time: answered again
    views = list(chat_tab.regenerate_stopped("", 0.7, 1.0, 4, 5, False, state))
    assert views[-1][-1] != 5 and state.arena.panes[1].turns[-1].settings["seed"] == views[-1][-1]
