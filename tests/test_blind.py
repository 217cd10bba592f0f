"""Blind rounds through the Chat tab's handlers: anonymous until the vote, a new mapping
per round, explicit votes, flags, results, the model card section, export; and a chat
loop that loses nothing (a message typed mid-reply, Stop, Clear and Regenerate, seeds)."""

import dataclasses
import json
import re
import threading
import time
from pathlib import Path

import gradio as gr
import pytest
from helpers import held_first_word, held_loading, slowed, tiny_yaml, unpack

from arena import chat_session
from arena.rounds import STOPPED_UNSAID, ArenaSession, Phase, Turn, add_message, reply, vote
from arena.votes import VoteStore, config_hash, votes_path
from core.errors import UserError
from inference.generation import GenerationSettings, Reply
from ui import chat_actions, chat_results, merge_tab

pytestmark = pytest.mark.usefixtures("isolated_app")
REVEALING = re.compile(r"int8|bf16|fp8|fp32|torch|MB|tok/s|first token|Merged|Parent|llama", re.IGNORECASE)


def merged_pair(tiny_models) -> tuple[str, str, str]:
    a, b = str(tiny_models("llama", 1)), str(tiny_models("llama", 2))
    output = merge_tab.merge(tiny_yaml(a, b), "blind", False, merge_tab.MergeSession(), progress=lambda *x, **k: None)[2]
    return output, a, b


def request(merged="", a="", b="", tokens=6, seed=0, temperature=0.7, on=(True, True, True), precision="int8", lock_seed=False):
    return chat_session.ChatRequest(temperature=temperature, max_new_tokens=tokens, seed=seed, merged=merged, parent_a=a, parent_b=b,
                                merged_on=on[0], parent_a_on=on[1], parent_b_on=on[2], merged_precision=precision,
                                parent_precision="bf16", lock_seed=lock_seed)


def send(state, req, message="hello") -> list:
    """Send as the page runs it: the first step's view, then the stream step's views."""
    box, first = chat_actions.take_message(message, req, state)
    assert box == "", "the message was refused"
    return [first, *chat_actions.stream(req, state)]


def say(state, output, a, b, message="hello", tokens=6, seed=0):
    return send(state, request(output, a, b, tokens, seed), message)


def test_blind_round_is_anonymous_until_an_explicit_vote(tiny_models):
    output, a, b = merged_pair(tiny_models)
    state = chat_session.ChatSession()
    view = chat_actions.set_blind(True, state)
    assert [bot.label for bot in view.chats] == ["Model 1", "Model 2", "Model 3"] and view.voting is False
    final = say(state, output, a, b)[-1]
    _, stats = unpack(final)
    assert final.voting is True and stats == ["", "", ""]  # no token counts or speeds before the reveal
    refused = [("", "", "nothing chosen"), ("", "Model 1", "nothing chosen"), ("Model 2", "Model 2", "both best and worst"),
               ("all bad", "Model 1", "has no worst")]
    for best, worst, problem in refused:
        assert problem in chat_actions.submit_vote(best, worst, False, state)[0].note
    md = Path(chat_actions.export_session(state).value[0]["path"]).read_text()  # before the reveal: anonymous
    assert "Model 1" in md and not REVEALING.search(md.replace("Slerp Arena", "")) and output not in md and a not in md, md
    shown_first = state.arena.panes[0].label
    view, plot, table = chat_actions.submit_vote("Model 1", "Model 3", False, state)
    assert view.chats[0].label == f"Model 1 = {shown_first}" and view.voting is False
    _, stats = unpack(view)
    assert all("tok/s" in s and "MB" in s for s in stats)  # speed and memory after the reveal
    assert "<svg" in plot and "1 votes" in table and config_hash(output) in table and "Vote recorded" in view.note
    assert "already judged" in chat_actions.submit_vote("Model 2", "", False, state)[0].note


def test_each_round_draws_a_new_mapping_and_resets_the_vote(tiny_models):
    output, a, b = merged_pair(tiny_models)
    state = chat_session.ChatSession()
    chat_actions.set_blind(True, state)
    mappings = []
    for _ in range(10):
        first = say(state, output, a, b, tokens=2)[0]  # the first view after the round started
        assert first.reset_vote and first.updates()[7].value is None  # best / worst emptied
        assert [bot.label for bot in first.chats] == ["Model 1", "Model 2", "Model 3"]
        mappings.append(tuple(p.label for p in state.arena.panes))
        chat_actions.submit_vote("tie", "", False, state)
        chat_actions.clear_chat(state)
    assert len(set(mappings)) > 1, mappings
    assert VoteStore(votes_path()).count() == 10


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
        chat_results.add_results_to_card(output, False)
    store = VoteStore(votes_path())
    for _ in range(30):
        store.record(config_hash(output), "q", [("best", "Merged"), ("worst", "Parent B")], {"Merged": output, "Parent A": a,
                     "Parent B": b}, {}, {"seed": 0})
    plot, table = chat_results.show_results(output, False)
    assert "<svg" in plot and "Merged beats Parent A in 97%" in table
    chat_results.add_results_to_card(output, False)
    message = chat_results.add_results_to_card(output, False)
    card = (Path(output) / "README.md").read_text()
    assert "30 votes" in message and card.count("## Arena results") == 1 and "| Merged vs Parent A | 97%" in card
    with pytest.raises(gr.Error, match="not a merge made here"):
        chat_results.add_results_to_card(a, False)


def test_export_records_each_turns_settings_seed_and_stop(tiny_models):
    a = str(tiny_models("llama", 1))
    state = chat_session.ChatSession()
    send(state, request(a=a, tokens=4, seed=7, temperature=0.0, on=(False, True, False), precision="bf16"), "hello")
    send(state, request(a=a, tokens=3, seed=9, temperature=0.5, on=(False, True, False), precision="bf16"), "again")
    md, js = [f["path"] for f in chat_actions.export_session(state).value]
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


def replying(state) -> bool:
    return any(p.history and p.history[-1]["role"] == "assistant" and p.history[-1]["content"] for p in state.arena.panes)


def test_a_message_sent_mid_reply_waits_its_turn_and_every_message_is_answered_in_order(tiny_models, monkeypatch):
    slowed(monkeypatch)
    a = str(tiny_models("llama", 1))
    state, req = chat_session.ChatSession(), request(a=a, tokens=16, on=(False, True, False), precision="bf16")
    box, first = chat_actions.take_message("first", req, state)
    updates = first.updates()
    assert box == "" and first.busy is True
    assert updates[-5].interactive is True and updates[-4].interactive is False  # Send queues; Regenerate waits
    thread, errors = run_in_thread(chat_actions.stream(req, state))
    wait_for(lambda: replying(state))
    box, second = chat_actions.take_message("second", req, state)  # mid-reply: taken, shown after the reply on its way
    assert box == "" and [m["content"] for m in second.chats[1]][0::2] == ["first", "second\n\n*⏳ waiting its turn*"]
    assert "1 more message waiting: answered in order" in second.note
    with pytest.warns(UserWarning, match="regenerate: replies are still on their way"):
        refused = chat_actions.take_regenerate(req, state)  # not now: said where the visitor looks
    assert refused.note.startswith("⚠️ regenerate: replies are still on their way") and refused.busy is None
    thread.join(30)
    assert not errors and chat_actions.stream_done("", state)[1].busy is True  # the second still waits for its step
    views = list(chat_actions.stream(req, state))
    assert views[-1].busy is False and chat_actions.stream_done("", state)[1].voting is False
    history = state.arena.panes[1].history
    assert [m["role"] for m in history] == ["user", "assistant"] * 2 and [m["content"] for m in history[0::2]] == ["first", "second"]
    assert all(m["content"] for m in history[1::2])
    with pytest.warns(UserWarning, match="empty message") as shown:
        box, refusal = chat_actions.take_message("  ", req, state)
    assert box is None and refusal.note == f"⚠️ {shown[-1].message}"


def test_stop_mid_reply_keeps_the_text_marked_stopped_and_an_older_stream_changes_nothing(tiny_models, monkeypatch):
    slowed(monkeypatch)
    a = str(tiny_models("llama", 1))
    state, req = chat_session.ChatSession(), request(a=a, tokens=64, on=(False, True, False), precision="bf16")
    chat_actions.take_message("hello", req, state)
    views = chat_actions.stream(req, state)
    thread, errors = run_in_thread(views)
    wait_for(lambda: replying(state))
    box, stopped = chat_actions.stop_replies("", state)
    kept = state.arena.panes[1].history[-1]["content"]
    thread.join(30)  # the page's cancel closes the stream; here it notices the Stop at its next snapshot
    assert not errors and box is None and "stopped" in stopped.stats[1]
    assert state.arena.panes[1].history[-1]["content"] == kept and state.arena.panes[1].turns[-1].stopped


def test_a_reply_stopped_before_its_first_word_says_so_and_the_next_message_is_answered(tiny_models, monkeypatch):
    """Seen in Chromium: a pane stopped before its first word kept an empty grey bubble."""
    slowed(monkeypatch)
    release = held_first_word(monkeypatch, "Parent B")
    a, b = str(tiny_models("llama", 1)), str(tiny_models("llama", 2))
    state, req = chat_session.ChatSession(), request(a=a, b=b, tokens=32, on=(False, True, True), precision="bf16")
    chat_actions.take_message("hello", req, state)
    thread, errors = run_in_thread(chat_actions.stream(req, state))
    wait_for(lambda: replying(state))
    _, stopped = chat_actions.stop_replies("", state)
    thread.join(30)
    said, unsaid = stopped.chats[1][-1]["content"], stopped.chats[2][-1]["content"]
    assert not errors and said and unsaid == STOPPED_UNSAID and "0 tokens" in stopped.stats[2] and "stopped" in stopped.stats[2]
    assert state.arena.panes[2].history[-1] == {"role": "assistant", "content": ""}  # the model's own history keeps it empty
    release.set()
    answered = send(state, dataclasses.replace(req, max_new_tokens=4), "again")[-1]
    assert [m["role"] for m in answered.chats[2]] == ["user", "assistant"] * 2 and answered.chats[2][-1]["content"]
    assert answered.chats[2][1]["content"] == STOPPED_UNSAID


def test_a_stop_before_the_stream_begins_puts_the_message_back_in_the_box(tiny_models):
    a = str(tiny_models("llama", 1))
    state, req = chat_session.ChatSession(), request(a=a, tokens=4, on=(False, True, False), precision="bf16")
    chat_actions.take_message("waiting for the device", req, state)
    chat_actions.take_message("and another", req, state)
    box, _ = chat_actions.stop_replies("typed meanwhile", state)
    assert box == "waiting for the device\nand another\ntyped meanwhile" and state.arena.panes[1].history == []
    assert [v.chats for v in chat_actions.stream(req, state)] == [[gr.skip()] * 3]  # the cancelled step, had it run: nothing
    assert unpack(send(state, req, "hello")[-1])[0][1][-1]["content"]  # and the next message is answered as usual


def test_a_stop_while_the_models_load_takes_the_message_back_and_the_next_message_is_answered(tiny_models, monkeypatch):
    """Seen in Chromium on a busy host: a Stop while the panes loaded left each one saying
    'loading' for good, and the unanswered message in the panes, so the next turn held two
    user messages in a row (roles a chat template such as Llama-2's requires to alternate)."""
    a = str(tiny_models("llama", 1))
    state, req = chat_session.ChatSession(), request(a=a, tokens=4, on=(False, True, False), precision="bf16")
    send(state, req, "first")
    before = [dict(m) for m in state.arena.panes[1].history]
    loading, release = held_loading(monkeypatch)
    chat_actions.take_message("stopped while loading", req, state)
    thread, errors = run_in_thread(chat_actions.stream(req, state))
    assert loading.wait(30)
    box, stopped = chat_actions.stop_replies("", state)
    release.set()
    thread.join(30)
    assert not errors and box == "stopped while loading" and "back in the box" in stopped.note
    assert state.arena.panes[1].history == before and stopped.stats[1] == state.arena.panes[1].turns[-1].line(True)
    assert "loading" not in " ".join(chat_actions.view(state).stats)
    histories, _ = unpack(send(state, req, "next")[-1])
    assert [m["role"] for m in histories[1]] == ["user", "assistant"] * 2 and histories[1][-1]["content"]


def test_a_regenerate_stopped_while_the_models_load_keeps_the_replies_it_would_have_replaced(tiny_models, monkeypatch):
    a = str(tiny_models("llama", 1))
    state, req = chat_session.ChatSession(), request(a=a, tokens=4, on=(False, True, False), precision="bf16")
    send(state, req, "first")
    before, turns = [dict(m) for m in state.arena.panes[1].history], list(state.arena.panes[1].turns)
    loading, release = held_loading(monkeypatch)
    chat_actions.take_regenerate(req, state)
    thread, errors = run_in_thread(chat_actions.stream(req, state))
    assert loading.wait(30)
    box, _ = chat_actions.stop_replies("", state)
    release.set()
    thread.join(30)
    assert not errors and box is None
    assert state.arena.panes[1].history == before and state.arena.panes[1].turns == turns


def test_clear_mid_reply_empties_the_panes_and_the_stream_changes_nothing(tiny_models, monkeypatch):
    slowed(monkeypatch)
    output, a, b = merged_pair(tiny_models)
    state, req = chat_session.ChatSession(), request(output, a, b, tokens=64, precision="bf16")
    chat_actions.take_message("hello", req, state)
    thread, errors = run_in_thread(chat_actions.stream(req, state))
    wait_for(lambda: replying(state))
    histories, stats = unpack(chat_actions.clear_chat(state))
    thread.join(30)
    assert not errors and histories == [[], [], []] and stats == ["", "", ""]
    assert all(p.history == [] for p in state.arena.panes)


def test_regenerate_draws_a_new_seed_unless_locked_and_a_stop_before_it_begins_keeps_the_replies(tiny_models):
    a = str(tiny_models("llama", 1))
    state, req = chat_session.ChatSession(), request(a=a, tokens=4, seed=5, on=(False, True, False), precision="bf16")
    send(state, req)
    before = [dict(m) for m in state.arena.panes[1].history]
    first = chat_actions.take_regenerate(req, state)
    chat_actions.stop_replies("", state)  # pressed while Regenerate waited for the device
    assert list(chat_actions.stream(req, state))[0].chats == [gr.skip()] * 3 and state.arena.panes[1].history == before
    first = chat_actions.take_regenerate(req, state)
    views = list(chat_actions.stream(req, state))
    assert first.seed != 5 and len(state.arena.panes[1].history) == 2
    assert state.arena.panes[1].turns[-1].settings["seed"] == first.seed and f"seed {first.seed}" in views[-1].stats[1]
    locked = chat_actions.take_regenerate(dataclasses.replace(req, lock_seed=True), state)
    views = list(chat_actions.stream(req, state))
    assert locked.seed == 5 and "seed 5" in views[-1].stats[1]
    emptied = dataclasses.replace(req, seed=None)  # seen in Chromium: an emptied seed box refused an unlocked Regenerate
    drawn = chat_actions.take_regenerate(emptied, state)
    assert drawn.seed is not None and "seed" in list(chat_actions.stream(emptied, state))[-1].stats[1]
    assert chat_actions.take_regenerate(dataclasses.replace(emptied, lock_seed=True), state).note.startswith("⚠️ seed: empty")


def test_a_seed_the_box_could_not_hold_is_refused_in_one_line_and_nothing_is_lost(tiny_models, monkeypatch):
    a = str(tiny_models("llama", 1))
    state = chat_session.ChatSession()
    for seed, shown in ((None, "empty"), (-1, "'-1'"), (2**31, "'2147483648'"), (1.5, "'1.5'"), (10**23, "'1e+23'")):
        with pytest.warns(UserWarning) as warned:  # gr.Warning outside an event is a Python warning
            box, refusal = chat_actions.take_message("hello", request(a=a, seed=seed, on=(False, True, False)), state)
        assert box is None and refusal.chats == [gr.skip()] * 3  # the box keeps the message; the panes stay
        said = str(warned[-1].message)
        assert said == f"seed: {shown} is not a whole number from 0 to 2147483647 — type a seed such as 0 or 1234"
        assert refusal.note == f"⚠️ {said}"  # also on the line under the message box
    assert all(p.history == [] for p in state.arena.panes) and not state.queue


def test_vote_needs_a_blind_round_with_replies():
    with pytest.raises(UserError, match="blind rounds"):
        vote(ArenaSession(), VoteStore(votes_path()), "Model 1", "", "h", [])


def test_a_blind_round_shows_every_pane_at_the_pace_of_the_slowest(tiny_models):
    """The merge (int8) decodes faster than its bf16 parents: in a blind round its words
    must not appear first, nor its token count grow faster, nor its reply end first."""
    output, a, b = merged_pair(tiny_models)
    state = chat_session.ChatSession()
    chat_actions.set_blind(True, state)
    request(output, a, b).configure(state.arena)
    add_message(state.arena, "hello")
    order = [p.label for p in state.arena.panes]
    speed = {"Merged": 3, "Parent A": 1, "Parent B": 2}  # characters per snapshot

    def stream(request):
        for step in range(1, 9):
            yield [Reply(label, "abcdefghijklmnop"[: speed[label] * step], done=speed[label] * step >= 16) for label in order]
        yield [Reply(label, "abcdefghijklmnop", done=True) for label in order]

    shown = []
    for session in reply(state.arena, GenerationSettings(), stream=stream):
        texts = [p.history[-1]["content"] if p.history and p.history[-1]["role"] == "assistant" else "" for p in session.panes]
        shown.append((texts, [p.status(reveal=False) for p in session.panes]))
    for texts, stats in shown[:-1]:
        assert len(set(texts)) == 1, texts  # the same length everywhere: nobody is first
        assert not any("tokens" in line and not line.startswith("0 tokens") for line in stats), stats
    assert shown[-1][0] == ["abcdefghijklmnop"] * 3


def test_a_double_click_sends_once_and_messages_refused_once_loaded_all_come_back(tiny_models):
    a = str(tiny_models("llama", 13))  # loaded by no other test: the fit is checked once it loads
    state, req = chat_session.ChatSession(), request(a=a, tokens=4, on=(False, True, False), precision="bf16")
    assert chat_actions.take_message("hello", req, state)[0] == ""
    assert chat_actions.take_message("hello", req, state) == ("", None)  # the second click of a double click
    assert state.queued_messages() == ["hello"]
    long_one, long_two = "bees " * 300, "wasps " * 300  # longer than the tiny model's 256-token context
    chat_actions.take_message(long_one, req, state)
    chat_actions.take_message(long_two, req, state)
    list(chat_actions.stream(req, state))  # "hello" is answered
    for _ in range(2):
        with pytest.warns(UserWarning, match="tokens in the chat template; Parent A reads 256"):
            list(chat_actions.stream(req, state))
    assert chat_actions.stream_done("typed since", state)[0] == f"{long_one}\n{long_two}\ntyped since"  # none lost, in order
    history = state.arena.panes[1].history
    assert [m["content"] for m in history if m["role"] == "user"] == ["hello"] and history[-1]["role"] == "assistant"


def test_a_regenerate_that_no_longer_fits_keeps_the_last_replies(tiny_models):
    a = str(tiny_models("llama", 1))
    state, req = chat_session.ChatSession(), request(a=a, tokens=4, on=(False, True, False), precision="bf16")
    send(state, req, "hello")
    before = [dict(m) for m in state.arena.panes[1].history]
    longer = dataclasses.replace(req, system_prompt="Always answer at length. " * 60)  # the prompt outgrows the context
    chat_actions.take_regenerate(longer, state)
    with pytest.warns(UserWarning, match="tokens in the chat template; Parent A reads 256"):
        views = list(chat_actions.stream(longer, state))
    assert state.arena.panes[1].history == before and len(state.arena.panes[1].turns) == 1  # the replies stay
    assert views[-1].note.startswith("⚠️ message:") and chat_actions.stream_done("", state)[0] is None


def test_a_stop_between_a_rounds_turn_and_its_start_leaves_the_panes_as_they_were(tiny_models):
    """Stop lands after a stream step took its round and before the step began answering
    it: the round ends stopped, its message goes back to the box and joins no pane."""
    state, req = chat_session.ChatSession(), request(a=str(tiny_models("llama", 1)), tokens=4, on=(False, True, False), precision="bf16")
    chat_actions.take_message("never answered", req, state)
    waiting = chat_session.next_round(state)
    assert chat_session.stop_replies(state) == ["never answered"] and waiting.phase is Phase.STOPPED and state.current is None
    assert list(chat_session.answer(req, state, waiting)) == []
    assert all(not p.history for p in state.arena.panes) and not state.busy
