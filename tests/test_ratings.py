"""Pairwise outcomes from 3-way votes, the Bradley–Terry fit with its bootstrap, the
identity-leak flag, the votes schema migration and the ratings CLI."""

import sqlite3

import numpy as np
import pytest
from helpers import run_main

from arena import ratings
from arena.leaks import identity_leak, names_of
from arena.votes import Vote, VoteStore

ALL = ("Merged", "Parent A", "Parent B")


def vote(**kwargs) -> Vote:
    return Vote("r", "h", kwargs.pop("labels", ALL), **kwargs)


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"best": "Parent B", "worst": "Merged"}, {("Merged", "Parent A"): 0.0, ("Merged", "Parent B"): 0.0, ("Parent A", "Parent B"): 0.0}),
    ({"best": "Merged"}, {("Merged", "Parent A"): 1.0, ("Merged", "Parent B"): 1.0}),  # A vs B: nothing said
    ({"worst": "Parent A"}, {("Merged", "Parent A"): 1.0, ("Parent A", "Parent B"): 0.0}),
    ({"tie": True}, dict.fromkeys([("Merged", "Parent A"), ("Merged", "Parent B"), ("Parent A", "Parent B")], 0.5)),
    ({"tie": True, "worst": "Parent B"}, {("Merged", "Parent A"): 0.5, ("Merged", "Parent B"): 1.0, ("Parent A", "Parent B"): 1.0}),
    ({"all_bad": True}, dict.fromkeys([("Merged", "Parent A"), ("Merged", "Parent B"), ("Parent A", "Parent B")], 0.5)),
    ({"best": "Parent A", "labels": ("Parent A", "Merged")}, {("Merged", "Parent A"): 0.0}),  # Parent B switched off
])
def test_each_vote_becomes_pairwise_outcomes(kwargs, expected):
    assert ratings.pairwise(vote(**kwargs)) == expected


def test_bradley_terry_recovers_known_strengths():
    strengths = np.array([0.6, 0.3, 0.1])
    games = 1000
    wins = np.array([[games * strengths[i] / (strengths[i] + strengths[j]) if i != j else 0 for j in range(3)] for i in range(3)])
    assert np.allclose(ratings.fit_bradley_terry(wins), strengths, atol=1e-6)


def test_merge_that_always_wins_beats_both_parents_with_a_tight_interval():
    votes = [vote(best="Merged", worst="Parent B" if i % 2 else "Parent A") for i in range(30)]
    res = ratings.results(votes, "h")
    assert [p.rival for p in res.pairs] == ["Parent A", "Parent B"] and res.votes == 30
    for pair in res.pairs:
        assert pair.win_rate > 0.9 and pair.low > 0.5 and pair.votes == 30


def test_an_even_contest_has_an_interval_around_one_half():
    votes = [vote(best=["Merged", "Parent A", "Parent B"][i % 3]) for i in range(60)]
    for pair in ratings.results(votes, "h").pairs:
        assert pair.low < 0.5 < pair.high and abs(pair.win_rate - 0.5) < 0.05


def test_flagged_votes_are_kept_but_left_out_by_default():
    votes = [vote(best="Merged") for _ in range(10)] + [vote(best="Parent A", flagged="leak") for _ in range(10)]
    res = ratings.results(votes, "h")
    assert res.votes == 10 and res.flagged == 10 and res.pairs[0].win_rate > 0.9
    everything = ratings.results(votes, "h", include_flagged=True)
    assert everything.votes == 20 and everything.flagged == 0 and everything.pairs[0].win_rate < 0.6


@pytest.mark.parametrize(("reply", "leaks"), [
    ("I am SmolLM2, a small model.", True), ("I was trained by Hugging Face.", True), ("Qwen2.5 here", True),
    ("As a Llama model…", True), ("Built by Meta AI.", True), ("Alibaba Cloud made me.", True), ("My name is Gemma", True),
    ("The metadata of llamas is alarming.", False), ("Paris is the capital of France.", False),
])
def test_replies_naming_a_model_or_maker_are_flagged(reply, leaks):
    assert bool(identity_leak({"Model 2": reply}, [])) is leaks


def test_a_parents_repo_or_folder_name_is_flagged(tmp_path):
    assert names_of(["bundled:SmolLM2-135M-Instruct"]) == ["SmolLM2-135M-Instruct", "HuggingFaceTB"]
    assert "names 'pirate-parent'" in identity_leak({"Merged": "Arr, I be pirate-parent!"}, [str(tmp_path / "pirate-parent")])
    assert identity_leak({"Merged": "I am org-model v2"}, ["someorg/org-model"])
    assert not identity_leak({"Merged": "an answer"}, [str(tmp_path / "pirate-parent")])


def write_votes(store: VoteStore, digest: str, n: int, best: str = "Merged", flagged: str = "") -> None:
    models = dict(zip(ALL, ["m", "a", "b"], strict=True))
    for _ in range(n):
        store.record(digest, "q", [("best", best), ("worst", "Parent B")], models, dict.fromkeys(ALL, "r"), {"seed": 1}, flagged)


def test_old_votes_databases_are_migrated_and_grouped(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the schema before round ids and flags
        db.execute("CREATE TABLE votes (id INTEGER PRIMARY KEY AUTOINCREMENT, created REAL NOT NULL, config_hash TEXT NOT NULL, "
                   "prompt TEXT NOT NULL, verdict TEXT NOT NULL, model TEXT, models TEXT NOT NULL, replies TEXT NOT NULL, "
                   "settings TEXT NOT NULL)")
        for i, (verdict, model) in enumerate([("best", "Merged"), ("worst", "Parent A"), ("tie", None)]):
            replies = '{"Merged": "x"}' if i < 2 else '{"Merged": "y"}'
            db.execute("INSERT INTO votes (created, config_hash, prompt, verdict, model, models, replies, settings) "
                       "VALUES (?, 'h', 'q', ?, ?, ?, ?, '{}')", (i, verdict, model, '{"Merged": "m", "Parent A": "a"}', replies))
    store = VoteStore(path)
    votes = store.votes("h")
    assert [(v.best, v.worst, v.tie) for v in votes] == [("Merged", "Parent A", False), (None, None, True)]
    write_votes(store, "h", 1)
    assert len(VoteStore(path).votes("h")) == 3 and store.count() == 5


def test_cli_prints_the_figures_from_a_votes_database(tmp_path, capsys):
    store = VoteStore(tmp_path / "votes.sqlite")
    write_votes(store, "winner", 30)
    write_votes(store, "winner", 5, best="Parent A", flagged="Parent A's reply names 'Qwen'")
    write_votes(store, "loser", 12, best="Parent A")
    code, out, _ = run_main(ratings.main, [tmp_path / "votes.sqlite"], capsys)
    assert code == 0 and "merge config winner: Merged beats Parent A in 97%" in out and "30 votes (5 flagged left out)" in out
    assert "merge config loser:" in out
    code, out, _ = run_main(ratings.main, [tmp_path / "votes.sqlite", "--config", "winner", "--include-flagged"], capsys)
    assert "loser" not in out and "35 votes" in out
    code, _, err = run_main(ratings.main, [tmp_path / "nope.sqlite"], capsys)
    assert code == 2 and err.startswith("votes: ")


def test_too_few_votes_show_no_interval_and_say_from_how_many():
    res = ratings.results([vote(best="Merged", worst="Parent B")], "h")
    assert all(p.low is None and p.high is None for p in res.pairs)
    assert "| 1 |" in ratings.table_markdown(res) and "no interval below 10 votes" in ratings.table_markdown(res)
    assert "no interval below 10 votes" in ratings.plot_html(res) and "<line x1" not in ratings.plot_html(res).split("</text>", 6)[-1]
    ten = ratings.results([vote(best="Merged", worst="Parent B") for _ in range(10)], "h")
    assert all(p.low is not None for p in ten.pairs)
