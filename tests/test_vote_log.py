"""Votes that outlive a restart: the append-only vote log (arena/vote_log.py) under the
SQLite index (arena/votes.py)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from arena import vote_log
from arena.votes import VoteStore, held_line, log_folder
from testkit.hub_server import HubServer
from ui import chat_results

ROOT = Path(__file__).resolve().parents[1]

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
    _, table = chat_results.show_results("some/merge", False)
    assert "The vote log holds 2 vote(s) over all merges since 20" in table and "UTC" in table
    monkeypatch.setenv(vote_log.REPO_ENV, "me/arena-votes")
    assert "pushed to the Hub dataset me/arena-votes" in held_line(store)


RESTART = """
import sys
from pathlib import Path

from arena import vote_log
from arena.votes import VoteStore

folder, n = Path(sys.argv[1]), int(sys.argv[2])
log = vote_log.open_log(folder / "log")
store = VoteStore(folder / "votes.sqlite", log)
print("held at start", store.held()[0])
for i in range(n):
    store.record("h", f"q{i}", [("best", "Merged"), ("worst", "Parent B")], {"Merged": "m", "Parent A": "a", "Parent B": "b"},
                 {"Merged": "r", "Parent A": "r", "Parent B": "r"}, {"seed": i})
log.scheduler.trigger().result()  # the push the scheduler makes every few minutes, now
log.scheduler.stop()
print("held at end", store.held()[0])
"""


def test_on_the_hub_the_votes_outlive_a_restart_through_a_commit_scheduler(tmp_path):
    """huggingface_hub's real CommitScheduler and snapshot_download against the Hub-protocol
    server (testkit/hub_server.py, which takes uploads): each start is a new process on a new
    disk, as a restarted Space is; it reads the dataset back, votes, and pushes."""
    with HubServer() as hub:
        hub.users["hf_owner"] = "owner"
        env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
        env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf-home"), HF_HUB_DISABLE_XET="1", HF_TOKEN="hf_owner",
                   **{vote_log.REPO_ENV: "owner/arena-votes", vote_log.EVERY_MIN_ENV: "60"})

        def start(disk: str, votes: int) -> list[str]:
            done = subprocess.run([sys.executable, "-c", RESTART, str(tmp_path / disk), str(votes)], cwd=ROOT, env=env,
                                  capture_output=True, text=True, timeout=120)
            assert done.returncode == 0, done.stderr[-2000:]
            return [line for line in done.stdout.splitlines() if line.startswith("held")]

        assert start("first", 3) == ["held at start 0", "held at end 3"]
        assert start("second", 1) == ["held at start 3", "held at end 4"]  # a restart: a new disk, the votes read back
        assert start("third", 0) == ["held at start 4", "held at end 4"]
        pushed = sorted(p.name for p in hub.repos["datasets/owner/arena-votes"].folder.glob("votes/*.jsonl"))
        assert len(pushed) == 2 and {user for _, user in hub.commits} == {"owner"}  # one file per process that voted
