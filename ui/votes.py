"""Votes from blind comparisons, kept in SQLite so they survive restarts, and the
scoreboard per merge config (by the hash of its YAML)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    config_hash TEXT NOT NULL,
    prompt TEXT NOT NULL,
    verdict TEXT NOT NULL,          -- 'best', 'worst' or 'tie'
    model TEXT,                     -- the pane label voted for ('Merged', 'Parent A', …); NULL for a tie
    models TEXT NOT NULL,           -- JSON: label -> model source, for every pane shown
    replies TEXT NOT NULL,          -- JSON: label -> reply
    settings TEXT NOT NULL          -- JSON: sampling settings
)
"""


@dataclass(frozen=True)
class Score:
    model: str
    best: int
    worst: int
    ties: int

    @property
    def net(self) -> int:
        return self.best - self.worst


class VoteStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one writer at a time across Gradio worker threads
        with self._connect() as db:
            db.execute(SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def record(self, config_hash: str, prompt: str, verdicts: list[tuple[str, str | None]], models: dict[str, str],
               replies: dict[str, str], settings: dict) -> None:
        """`verdicts`: ('best', label), ('worst', label) and/or ('tie', None)."""
        rows = [(time.time(), config_hash, prompt, verdict, label, json.dumps(models), json.dumps(replies), json.dumps(settings))
                for verdict, label in verdicts]
        with self._lock, self._connect() as db:
            db.executemany("INSERT INTO votes (created, config_hash, prompt, verdict, model, models, replies, settings) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def scoreboard(self, config_hash: str) -> list[Score]:
        with self._connect() as db:
            counts = db.execute("SELECT model, verdict, COUNT(*) FROM votes WHERE config_hash = ? GROUP BY model, verdict",
                                (config_hash,)).fetchall()
            ties = db.execute("SELECT COUNT(*) FROM votes WHERE config_hash = ? AND verdict = 'tie'", (config_hash,)).fetchone()[0]
        by_model: dict[str, dict[str, int]] = {}
        for model, verdict, n in counts:
            if model is not None:
                by_model.setdefault(model, {})[verdict] = n
        scores = [Score(m, v.get("best", 0), v.get("worst", 0), ties) for m, v in by_model.items()]
        return sorted(scores, key=lambda s: (-s.net, s.model))

    def count(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM votes").fetchone()[0]


def config_hash(merged_ref: str) -> str:
    """Identifies a merge across restarts: the hash of the mergekit_config.yml written
    next to the merged weights, or of the reference itself when there is none."""
    config = Path(merged_ref) / "mergekit_config.yml"
    text = config.read_text() if config.is_file() else merged_ref
    return hashlib.sha256(text.encode()).hexdigest()[:16]
