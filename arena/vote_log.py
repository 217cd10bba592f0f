"""The votes' record: append-only JSON lines, one file per app process, in one folder.

A Space's disk goes with every restart, so the votes live in this log, which outlives it
in one of two ways (docs/deploying.md#votes-that-outlive-a-restart):
- the folder is on a mounted Storage Bucket (`SLERP_ARENA_VOTE_LOG=/data/votes`);
- or it is pushed to a Hub dataset every few minutes by huggingface_hub's CommitScheduler
  (`SLERP_ARENA_VOTES_REPO`), and the dataset's files are read back at start.
The SQLite file (arena/votes.py) is only an index, rebuilt from the log when it is missing.

- Each vote is one line written by one write, then fsync'd: a kill mid-write leaves at
  most that line cut short, which readers skip (only complete lines count); nothing before
  it is touched.
- Each process writes its own file (a new name at every start), so two replicas, or a
  restarted Space and the files it read back, never write into one file.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

LOG_ENV = "SLERP_ARENA_VOTE_LOG"  # the log folder (default: vote-log/ beside the votes index)
REPO_ENV = "SLERP_ARENA_VOTES_REPO"  # a Hub dataset the log is pushed to, e.g. "me/arena-votes"
EVERY_MIN_ENV = "SLERP_ARENA_VOTES_EVERY"  # minutes between pushes (default 5)
HUB_FOLDER = "hub"  # inside the log folder: the dataset's files as read at start (never pushed back)
PATH_IN_REPO = "votes"


class VoteLog:
    def __init__(self, folder: Path, own: Path | None = None, lock: contextlib.AbstractContextManager | None = None):
        """Reads every log file under `folder`; writes this process's into `own` (default:
        `folder`), holding `lock` (a CommitScheduler's: no push reads half a line)."""
        self.folder = Path(folder)
        own = Path(own or folder)
        own.mkdir(parents=True, exist_ok=True)
        self.mine = own / f"votes-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}.jsonl"
        self.lock = lock or threading.Lock()
        self.scheduler = None  # the CommitScheduler pushing `own` to the Hub, if any

    def append(self, record: dict) -> None:
        line = (json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n").encode()
        with self.lock:
            fd = os.open(self.mine, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)

    def files(self) -> list[Path]:
        """Every log file: this folder's (this process's and earlier ones') and the Hub's copies."""
        return sorted(self.folder.rglob("*.jsonl"))


def complete_lines(path: Path, start: int) -> tuple[Iterator[dict], int]:
    """The records of `path`'s complete lines from byte `start`, and the byte after the last
    one. A line cut short by a kill has no newline yet: it is left for no one to read."""
    with path.open("rb") as f:
        f.seek(start)
        data = f.read()
    end = data.rfind(b"\n") + 1

    def records() -> Iterator[dict]:
        for line in data[:end].splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line damaged by a write that failed halfway and was then appended to
                continue
            if isinstance(record, dict) and record.get("round_id"):
                yield record

    return records(), start + end


def open_log(folder: Path) -> VoteLog:
    """The process's log in `folder`; pushed to (and first read back from) the Hub dataset
    named by SLERP_ARENA_VOTES_REPO, when set, with the token the Space's secrets give
    (HF_TOKEN)."""
    repo = os.environ.get(REPO_ENV, "").strip()
    if not repo:
        return VoteLog(folder)
    from huggingface_hub import CommitScheduler, snapshot_download

    own = folder / "own"
    own.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(Exception):  # a new, empty dataset, or the Hub unreachable: the log starts empty
        snapshot_download(repo, repo_type="dataset", allow_patterns=f"{PATH_IN_REPO}/*.jsonl", local_dir=folder / HUB_FOLDER)
    scheduler = CommitScheduler(repo_id=repo, repo_type="dataset", folder_path=own, path_in_repo=PATH_IN_REPO,
                                every=float(os.environ.get(EVERY_MIN_ENV, "5")), allow_patterns="*.jsonl", private=True)
    log = VoteLog(folder, own, scheduler.lock)
    log.scheduler = scheduler
    return log
