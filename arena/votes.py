"""Votes from blind rounds, grouped per merge config (by the hash of its YAML).

Each vote is one line of the vote log (arena/vote_log.py), which is what outlives a
restart; SQLite indexes it, one row per verdict, the rows of one vote sharing a round id.
The index reads each log file from where it stopped (`sync`, before every query), so it
is rebuilt from the log when lost, and it takes in lines other replicas wrote; a vote read
twice (its file copied from the Hub too) is indexed once. Databases written before the log
existed give their votes to the log once; before round ids and flags, they are migrated."""

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

from arena.vote_log import LOG_ENV, REPO_ENV, VoteLog, complete_lines, open_log
from core.errors import UserError
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
INDEX_SCHEMA = """
CREATE TABLE IF NOT EXISTS indexed (
    file TEXT PRIMARY KEY,          -- a log file, relative to the log folder
    bytes INTEGER NOT NULL          -- how far it is indexed (complete lines only)
);
CREATE INDEX IF NOT EXISTS votes_round ON votes (round_id);
"""
ADDED_COLUMNS = {"round_id": "TEXT", "flagged": "TEXT NOT NULL DEFAULT ''"}
COLUMNS = "created, config_hash, prompt, verdict, model, models, replies, settings, round_id, flagged"
TIE, ALL_BAD = "tie", "all bad"
VERDICTS = ("best", "worst", TIE, ALL_BAD)
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


def verdicts(best: str, worst: str, shown: dict[str, str]) -> list[tuple[str, str | None]]:
    """A visitor's choices as verdicts on pane labels: `best` is a shown name ("Model 2"),
    tie or all bad, and must be chosen; `worst` a shown name or ''. `shown`: shown name ->
    pane label, for the panes that answered. Refused with the field and the fix."""
    if not best:
        raise UserError("best reply", "nothing chosen", "pick the best reply, or tie, or all bad")
    for name, choice in (("best reply", best), ("worst reply", worst)):
        if choice and choice not in (*shown, TIE, ALL_BAD):
            raise UserError(name, f"'{choice}' is not one of the replies", f"pick one of {', '.join(shown)}")
    if worst in (TIE, ALL_BAD) or (worst and best == ALL_BAD):
        raise UserError("worst reply", "'all bad' has no worst", "leave the worst reply empty")
    if best == worst:
        raise UserError("vote", "the same reply is both best and worst", "pick two different replies")
    chosen = [("best", shown[best])] if best in shown else [(best, None)]
    return chosen + ([("worst", shown[worst])] if worst else [])


def votes_path() -> Path:
    return Path(os.environ.get("SLERP_ARENA_VOTES", ROOT / "data" / "votes.sqlite"))


def log_folder(index: Path) -> Path:
    return Path(os.environ.get(LOG_ENV) or Path(index).parent / "vote-log")


_app_stores: dict[Path, VoteStore] = {}
_app_stores_lock = threading.Lock()


def app_store() -> VoteStore:
    """The app's store, one per process (it owns the process's log file and Hub pushes)."""
    path = votes_path()
    with _app_stores_lock:
        if path not in _app_stores:
            _app_stores[path] = VoteStore(path, open_log(log_folder(path)))
        return _app_stores[path]


class VoteStore:
    def __init__(self, path: Path, log: VoteLog | None = None):
        """`path`: the SQLite index; `log`: the vote log (default: the folder beside it, or SLERP_ARENA_VOTE_LOG)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.log = log or VoteLog(log_folder(self.path))
        self._lock = threading.Lock()  # one writer at a time across Gradio worker threads
        with self._lock, self._connect() as db:
            before_log = db.execute("SELECT name FROM sqlite_master WHERE name = 'votes'").fetchone() and not db.execute(
                "SELECT name FROM sqlite_master WHERE name = 'indexed'").fetchone()
            db.execute(SCHEMA)
            _migrate(db)
            db.executescript(INDEX_SCHEMA)
            if before_log:
                self._give_to_log(db)
        self.sync()

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def record(self, config_hash: str, prompt: str, verdicts: list[tuple[str, str | None]], models: dict[str, str],
               replies: dict[str, str], settings: dict, flagged: str = "") -> str:
        """`verdicts`: ('best', label), ('worst', label), ('tie', None) and/or ('all bad', None).
        Written to the log first (the vote is kept once that returns), then indexed.
        Returns the round id shared by the rows."""
        round_id = uuid.uuid4().hex
        self.log.append({"round_id": round_id, "created": time.time(), "config_hash": config_hash, "prompt": prompt,
                         "verdicts": [list(v) for v in verdicts], "models": models, "replies": replies, "settings": settings,
                         "flagged": flagged})
        self.sync()
        return round_id

    def sync(self) -> None:
        """Index what the log files hold beyond what is indexed, in one transaction."""
        with self._lock, self._connect() as db:
            done = dict(db.execute("SELECT file, bytes FROM indexed"))
            for path in self.log.files():
                name = path.relative_to(self.log.folder).as_posix()
                if path.stat().st_size <= done.get(name, 0):
                    continue
                records, end = complete_lines(path, done.get(name, 0))
                for record in records:
                    for verdict, label in record["verdicts"]:
                        row = (record["created"], record["config_hash"], record["prompt"], verdict, label, json.dumps(record["models"]),
                               json.dumps(record["replies"]), json.dumps(record["settings"]), record["round_id"], record.get("flagged", ""))
                        db.execute(f"INSERT INTO votes ({COLUMNS}) SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE NOT EXISTS "
                                   "(SELECT 1 FROM votes WHERE round_id = ? AND verdict = ?)", (*row, record["round_id"], verdict))
                db.execute("INSERT OR REPLACE INTO indexed (file, bytes) VALUES (?, ?)", (name, end))

    def _give_to_log(self, db: sqlite3.Connection) -> None:
        """An index from before the log: its votes become log lines, already indexed."""
        rows = db.execute(f"SELECT {COLUMNS} FROM votes ORDER BY id").fetchall()
        grouped: dict[str, dict] = {}
        for created, digest, prompt, verdict, model, models, replies, settings, round_id, flagged in rows:
            record = grouped.setdefault(round_id, {"round_id": round_id, "created": created, "config_hash": digest, "prompt": prompt,
                                                   "verdicts": [], "models": json.loads(models), "replies": json.loads(replies),
                                                   "settings": json.loads(settings), "flagged": flagged})
            record["verdicts"].append([verdict, model])
        for record in grouped.values():
            self.log.append(record)
        if grouped:
            name = self.log.mine.relative_to(self.log.folder).as_posix()
            db.execute("INSERT OR REPLACE INTO indexed (file, bytes) VALUES (?, ?)", (name, self.log.mine.stat().st_size))

    def held(self) -> tuple[int, float | None]:
        """How many votes the store holds (every config, flagged ones included), and when the first was cast."""
        self.sync()
        with self._connect() as db:
            return db.execute("SELECT COUNT(DISTINCT round_id), MIN(created) FROM votes").fetchone()

    def votes(self, config_hash: str | None = None) -> list[Vote]:
        """Every vote (flagged ones included), oldest first; of one config if given."""
        self.sync()
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
        self.sync()
        with self._connect() as db:
            return [row[0] for row in db.execute("SELECT config_hash FROM votes GROUP BY config_hash ORDER BY MIN(id)")]

    def count(self) -> int:
        self.sync()
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


def held_line(store: VoteStore) -> str:
    """How many votes the log holds, since when, and where it is kept, in a visitor's words."""
    count, since = store.held()
    when = f" since {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(since))}" if since else ""
    if os.environ.get(REPO_ENV, "").strip():
        where = f"pushed to the Hub dataset {os.environ[REPO_ENV].strip()} every few minutes"
    elif os.environ.get(LOG_ENV):
        where = "kept on the storage set for them"
    else:
        where = "kept on this machine's disk (a Space loses them when it restarts: see the deploying docs)"
    return f"The vote log holds {count} vote(s) over all merges{when}, {where}."


def config_hash(merged_ref: str) -> str:
    """Identifies a merge across restarts: the hash of the mergekit_config.yml written
    next to the merged weights, or of the reference itself when there is none."""
    config = Path(merged_ref) / "mergekit_config.yml"
    text = config.read_text() if config.is_file() else merged_ref
    return hashlib.sha256(text.encode()).hexdigest()[:16]
