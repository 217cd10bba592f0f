"""Blind A/B/C: shuffled anonymous panes, votes in SQLite, reveal, scoreboard, export."""

import json
import random
from pathlib import Path

import gradio as gr
import pytest
from helpers import tiny_yaml

from core.errors import UserError
from inference import GenerationSettings, ModelCache
from ui import chat_tab, merge_tab
from ui.arena import ArenaSession, export_json, export_markdown, send, vote
from ui.votes import VoteStore, config_hash

pytestmark = pytest.mark.usefixtures("isolated_app")


def test_blind_round_in_the_app_votes_reveals_and_scores(tiny_models):
    a, b = str(tiny_models("llama", 1)), str(tiny_models("llama", 2))
    state = chat_tab.ChatSession()
    output = merge_tab.merge(tiny_yaml(a, b), "blind", False, merge_tab.MergeSession(), progress=lambda *x, **k: None)[2]
    view = chat_tab.set_blind(True, state)
    assert [bot.label for bot in view[:3]] == ["Model 1", "Model 2", "Model 3"]
    assert view[6].visible is False  # no votes before the replies
    final = list(chat_tab.chat("hello", "", 0.0, 1.0, 6, 0, output, a, b, True, True, True, "int8", "bf16", state))[-1]
    assert final[6].visible is True
    shown_first = state.arena.panes[0].label
    with pytest.raises(gr.Error, match="both best and worst"):
        chat_tab.submit_vote("Model 2", "Model 2", 0.0, 1.0, 6, 0, state)
    view = chat_tab.submit_vote("Model 1", "Model 3", 0.0, 1.0, 6, 0, state)
    assert view[0].label == f"Model 1 = {shown_first}" and view[6].visible is False
    scoreboard = view[-1]
    assert f"| {shown_first} | 1 | 0 | +1 |" in scoreboard and config_hash(output) in scoreboard


def test_votes_survive_a_restart(tiny_models, tmp_path):
    store = VoteStore(tmp_path / "votes.sqlite")
    store.record("abc", "hi", [("best", "Merged"), ("worst", "Parent B")], {"Merged": "m"}, {"Merged": "yo"}, {"seed": 0})
    store.record("abc", "hi again", [("tie", None)], {"Merged": "m"}, {"Merged": "yo"}, {"seed": 0})
    reopened = VoteStore(tmp_path / "votes.sqlite")  # a new process would open the same file
    scores = {s.model: s for s in reopened.scoreboard("abc")}
    assert (scores["Merged"].best, scores["Parent B"].worst, scores["Merged"].ties) == (1, 1, 1)
    assert reopened.count() == 3 and reopened.scoreboard("other") == []


def test_shuffle_hides_names_until_the_vote_and_export_has_everything(tiny_models, tmp_path):
    a, b = str(tiny_models("llama", 1)), str(tiny_models("llama", 2))
    session = ArenaSession()
    session.configure({"Merged": a, "Parent A": a, "Parent B": b}, dict.fromkeys(("Merged", "Parent A", "Parent B"), "bf16"),
                      dict.fromkeys(("Merged", "Parent A", "Parent B"), True))
    session.set_blind(True, random.Random(3))
    order = [p.label for p in session.panes]
    assert sorted(order) == ["Merged", "Parent A", "Parent B"] and session.display_labels()[0] == "Model 1"
    settings = GenerationSettings(temperature=0.0, max_new_tokens=5, min_new_tokens=5)
    with pytest.raises(UserError, match="no replies"):
        vote(session, VoteStore(tmp_path / "v.sqlite"), "Model 1", "", settings, "h")
    for _ in send(session, ModelCache(), "What is SLERP?", settings):
        pass
    vote(session, VoteStore(tmp_path / "v.sqlite"), "tie", "", settings, "h")
    assert session.revealed and session.display_labels()[2] == f"Model 3 = {order[2]}"
    data = json.loads(export_json(session, settings))
    assert [p["label"] for p in data["panes"]] == order and data["settings"]["max_new_tokens"] == 5
    assert data["panes"][0]["history"][0]["content"] == "What is SLERP?" and data["votes"][0]["verdicts"] == [["tie", None]]
    markdown = export_markdown(session, settings)
    assert "## User" in markdown and "What is SLERP?" in markdown and "### Merged" in markdown and "tie" in markdown


def test_export_from_the_app_writes_markdown_and_json(tiny_models):
    a = str(tiny_models("llama", 1))
    state = chat_tab.ChatSession()
    list(chat_tab.chat("hello", "", 0.0, 1.0, 4, 0, "", a, "", False, True, False, "bf16", "bf16", state))
    md, js = chat_tab.export_session(0.0, 1.0, 4, 0, state)
    assert md.endswith(".md") and "hello" in Path(md).read_text()
    assert json.loads(Path(js).read_text())["panes"][1]["history"][0]["content"] == "hello"
