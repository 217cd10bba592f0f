"""Votes from blind rounds, kept in SQLite so they survive restarts, grouped per merge
config (by the hash of its YAML). One row per verdict; the rows of one vote share a
round id. Databases written before round ids and flags existed are migrated in place."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from core.places import ROOT

SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    config_hash TEXT NOT NULL,
    prompt TEXT NOT NULL,
    verdict TEXT NOT NULL,          -- 'best', 'worst', 'tie' or 'all bad'
    model TEXT,                     -- the pane label voted for ('Merged', 'Parent A', …); NULL for a tie / all bad
    models TEXT NOT NULL,           -- JSON: label -> model source, for every pane shown
    replies TEXT NOT NULL,          -- JSON: label -> reply
    settings TEXT NOT NULL,         -- JSON: sampling settings (seed included)
    round_id TEXT,                  -- the rows of one vote share it
    flagged TEXT NOT NULL DEFAULT '' -- why the vote is left out of results by default ('' = counted)
)
"""
ADDED_COLUMNS = {"round_id": "TEXT", "flagged": "TEXT NOT NULL DEFAULT ''"}
VERDICTS = ("best", "worst", "tie", "all bad")
PANE_LABELS = ("Merged", "Parent A", "Parent B")  # the roles votes are recorded under


@dataclass(frozen=True)
class Vote:
    """One 3-way verdict on one round: `best` / `worst` are pane labels or None; `tie`
    means the panes not voted worst are equal; `all_bad` that every pane is equally bad."""
    round_id: str
    config_hash: str
    labels: tuple[str, ...]  # the panes that answered
    best: str | None = None
    worst: str | None = None
    tie: bool = False
    all_bad: bool = False
    flagged: str = ""


def votes_path() -> Path:
    return Path(os.environ.get("SLERP_ARENA_VOTES", ROOT / "data" / "votes.sqlite"))


class VoteStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one writer at a time across Gradio worker threads
        with self._lock, self._connect() as db:
            db.execute(SCHEMA)
            _migrate(db)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def record(self, config_hash: str, prompt: str, verdicts: list[tuple[str, str | None]], models: dict[str, str],
               replies: dict[str, str], settings: dict, flagged: str = "") -> str:
        """`verdicts`: ('best', label), ('worst', label), ('tie', None) and/or ('all bad', None).
        Returns the round id shared by the rows."""
        round_id, now = uuid.uuid4().hex, time.time()
        rows = [(now, config_hash, prompt, verdict, label, json.dumps(models), json.dumps(replies), json.dumps(settings),
                 round_id, flagged) for verdict, label in verdicts]
        with self._lock, self._connect() as db:
            db.executemany("INSERT INTO votes (created, config_hash, prompt, verdict, model, models, replies, settings, round_id, flagged) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        return round_id

    def votes(self, config_hash: str | None = None) -> list[Vote]:
        """Every vote (flagged ones included), oldest first; of one config if given."""
        where, args = ("WHERE config_hash = ?", (config_hash,)) if config_hash else ("", ())
        with self._connect() as db:
            rows = db.execute(f"SELECT round_id, config_hash, verdict, model, models, flagged FROM votes {where} ORDER BY id",
                              args).fetchall()
        grouped: dict[str, dict] = {}
        for round_id, digest, verdict, model, models, flagged in rows:
            vote = grouped.setdefault(round_id, {"round_id": round_id, "config_hash": digest,
                                                 "labels": tuple(json.loads(models)), "flagged": flagged})
            if verdict in ("best", "worst"):
                vote[verdict] = model
            else:
                vote["tie" if verdict == "tie" else "all_bad"] = True
        return [Vote(**v) for v in grouped.values()]

    def configs(self) -> list[str]:
        with self._connect() as db:
            return [row[0] for row in db.execute("SELECT config_hash FROM votes GROUP BY config_hash ORDER BY MIN(id)")]

    def count(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM votes").fetchone()[0]


def _migrate(db: sqlite3.Connection) -> None:
    """Add the columns newer code needs; rows of one old vote (same config, prompt and
    replies) get one round id."""
    have = {row[1] for row in db.execute("PRAGMA table_info(votes)")}
    for column, kind in ADDED_COLUMNS.items():
        if column not in have:
            db.execute(f"ALTER TABLE votes ADD COLUMN {column} {kind}")
    db.execute("UPDATE votes SET round_id = 'legacy-' || (SELECT MIN(v.id) FROM votes v WHERE v.config_hash = votes.config_hash "
               "AND v.prompt = votes.prompt AND v.replies = votes.replies) WHERE round_id IS NULL")


def config_hash(merged_ref: str) -> str:
    """Identifies a merge across restarts: the hash of the mergekit_config.yml written
    next to the merged weights, or of the reference itself when there is none."""
    config = Path(merged_ref) / "mergekit_config.yml"
    text = config.read_text() if config.is_file() else merged_ref
    return hashlib.sha256(text.encode()).hexdigest()[:16]
