"""Votes that outlive a restart: the append-only vote log (arena/vote_log.py) under the
SQLite index (arena/votes.py)."""

import shutil
import subprocess
import sys
from types import SimpleNamespace

import huggingface_hub

from arena import vote_log
from arena.votes import VoteStore, held_line, log_folder
from ui import chat_tab

MODELS = {"Merged": "m", "Parent A": "a", "Parent B": "b"}


def cast(store: VoteStore, n: int, digest: str = "h") -> None:
    for i in range(n):
        store.record(digest, f"q{i}", [("best", "Merged"), ("worst", "Parent B")], MODELS, dict.fromkeys(MODELS, "r"), {"seed": i})


def test_votes_outlive_a_restart_and_a_lost_index(tmp_path):
    index = tmp_path / "votes.sqlite"
    cast(VoteStore(index), 3)
    restarted = VoteStore(index)  # a new process: a new log file beside the first
    assert restarted.held()[0] == 3
    cast(restarted, 1)
    index.unlink()  # a Space's disk lost; the log was on storage that outlives it
    rebuilt = VoteStore(index)
    assert rebuilt.held()[0] == 4 and len(rebuilt.votes("h")) == 4
    assert len(list(log_folder(index).glob("*.jsonl"))) == 2


KILLED_VOTER = """
import sys
from types import SimpleNamespace
from arena.votes import VoteStore
store = VoteStore(sys.argv[1])
for i in range(100000):
    store.record("h", "q" * 2000, [("best", "Merged"), ("worst", "Parent B")], {"Merged": "m"}, {"Merged": "r" * 20000}, {})
    print(i + 1, flush=True)
"""


def test_a_kill_mid_vote_loses_at_most_that_vote(tmp_path):
    """A real process recording votes is killed (SIGKILL) mid-stream: every vote it said
    was recorded is there, at most the one being written is lost, and the store goes on."""
    index = tmp_path / "votes.sqlite"
    voter = subprocess.Popen([sys.executable, "-c", KILLED_VOTER, str(index)], stdout=subprocess.PIPE, text=True)
    recorded = 0
    while recorded < 40:
        recorded = int(voter.stdout.readline())
    voter.kill()
    voter.wait()
    recorded = max([recorded, *(int(line) for line in voter.stdout.read().split())])
    store = VoteStore(index)
    assert recorded <= store.held()[0] <= recorded + 1
    cast(store, 1)
    assert recorded + 1 <= store.held()[0] <= recorded + 2


def test_a_line_cut_short_is_skipped_and_nothing_else_is_lost(tmp_path):
    index = tmp_path / "votes.sqlite"
    store = VoteStore(index)
    cast(store, 2)
    with store.log.mine.open("ab") as log:
        log.write(b'{"round_id": "cut", "verdicts": [["best", "Mer')  # what a kill mid-write leaves
    assert VoteStore(index).held()[0] == 2
    (tmp_path / "fresh.sqlite").unlink(missing_ok=True)
    cast(VoteStore(index), 1)  # a later process writes its own file
    assert VoteStore(tmp_path / "fresh.sqlite", store.log).held()[0] == 3  # a new index from the same log


def test_two_replicas_on_one_storage_folder_see_each_others_votes(tmp_path):
    shared = tmp_path / "bucket"
    one = VoteStore(tmp_path / "one.sqlite", vote_log.VoteLog(shared))
    two = VoteStore(tmp_path / "two.sqlite", vote_log.VoteLog(shared))
    cast(one, 2)
    cast(two, 3, digest="other")
    assert one.held()[0] == two.held()[0] == 5
    assert len(one.votes("other")) == 3 and len(two.votes("h")) == 2


def test_a_vote_read_twice_is_counted_once(tmp_path):
    """The Hub's copy of this process's own file (read back at start) adds nothing."""
    index = tmp_path / "votes.sqlite"
    store = VoteStore(index)
    cast(store, 2)
    copy = log_folder(index) / vote_log.HUB_FOLDER / "votes" / store.log.mine.name
    copy.parent.mkdir(parents=True)
    shutil.copy(store.log.mine, copy)
    assert store.held()[0] == 2 and len(store.votes("h")) == 2


def test_the_results_say_how_many_votes_since_when_and_where(tmp_path, monkeypatch):
    monkeypatch.setenv("SLERP_ARENA_VOTES", str(tmp_path / "votes.sqlite"))
    store = VoteStore(tmp_path / "votes.sqlite")
    assert held_line(store).startswith("The vote log holds 0 vote(s) over all merges, kept on this machine's disk")
    cast(store, 2)
    _, table = chat_tab.show_results("some/merge", False)
    assert "The vote log holds 2 vote(s) over all merges since 20" in table and "UTC" in table
    monkeypatch.setenv(vote_log.REPO_ENV, "me/arena-votes")
    assert "pushed to the Hub dataset me/arena-votes" in held_line(store)


def test_on_the_hub_the_log_is_read_back_at_start_and_pushed_by_a_commit_scheduler(tmp_path, monkeypatch):
    """huggingface_hub's real CommitScheduler, up to the upload call: the Hub's answers are
    stood in for (no Hub here), the files and what would be committed are real."""
    commits, downloads = [], []

    def snapshot_download(repo_id, repo_type, allow_patterns, local_dir):
        downloads.append((repo_id, repo_type, allow_patterns))
        earlier = VoteStore(tmp_path / "earlier.sqlite", vote_log.VoteLog(tmp_path / "earlier"))
        cast(earlier, 4)  # what an earlier start pushed
        target = tmp_path / local_dir / "votes"
        target.mkdir(parents=True)
        shutil.copy(earlier.log.mine, target)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda self, repo_id, **kwargs: SimpleNamespace(repo_id=repo_id))
    monkeypatch.setattr(huggingface_hub.HfApi, "create_commit", lambda self, **kwargs: commits.append(kwargs))
    monkeypatch.setenv(vote_log.REPO_ENV, "me/arena-votes")
    monkeypatch.setenv(vote_log.EVERY_MIN_ENV, "60")
    log = vote_log.open_log(tmp_path / "log")
    try:
        store = VoteStore(tmp_path / "votes.sqlite", log)
        assert downloads == [("me/arena-votes", "dataset", "votes/*.jsonl")] and store.held()[0] == 4
        cast(store, 1)
        assert store.held()[0] == 5
        log.scheduler.trigger().result()
    finally:
        log.scheduler.stop()  # no push at exit, when the Hub is no longer stood in for
    [commit] = commits
    [added] = commit["operations"]
    assert commit["repo_type"] == "dataset" and added.path_in_repo == f"votes/{log.mine.name}"
    assert added.path_or_fileobj.read() == log.mine.read_bytes()  # this process's file only, as written
