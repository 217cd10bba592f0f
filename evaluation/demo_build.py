"""The demo parent's build as a background job of the app: one per process, started by any
visitor, watched by all of them, cancelled between two steps.

Its status is one line: the stage, the steps done, and the time left estimated from the
steps measured so far. Stages whose pace is not measured yet are counted by their share of
a build (STAGE_WEIGHTS), scaled by how fast this host has gone through the measured ones,
so the estimate follows a busy host instead of promising an idle one's time."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from core.errors import UserError
from core.sources import DEFAULT_MODEL
from evaluation import defaults
from evaluation.demo_parent import build_demo_parent

# Each stage's share of a build (a 2-core build's stage times, in proportion; they hold on
# both host classes within the estimate's own roughness).
STAGE_WEIGHTS = {"teacher answers": 53.0, "fine-tuning": 210.0, "report: original": 27.0, "report: demo parent": 28.0}


class BuildCancelled(Exception):
    """Raised from the build's progress callback: the build stops before anything is saved."""


@dataclass(frozen=True)
class BuildStatus:
    state: str  # "idle", "building", "cancelling", "built", "cancelled", "failed"
    stage: str = ""
    done: int = 0
    total: int = 0
    elapsed_s: float = 0.0
    left_s: float | None = None  # None: nothing measured yet
    folder: str = ""  # once built
    error: str = ""

    def line(self) -> str:
        if self.state == "building":
            steps = f"{self.stage} {self.done}/{self.total}" if self.total else "starting"
            left = f"about {_duration(self.left_s)} left" if self.left_s is not None else "estimating the time left"
            return f"⏳ Building the demo parent: {steps} · {_duration(self.elapsed_s)} so far, {left} · the form stays usable"
        if self.state == "cancelling":
            return "⏹ Cancelling the build: it stops at its next step, and nothing is saved."
        if self.state == "built":
            return "✅ The demo parent is built."
        if self.state == "cancelled":
            return "⏹ Build cancelled — nothing was saved; the defaults stay the original with itself."
        if self.state == "failed":
            return f"⚠️ {self.error}"
        return ""


class DemoBuild:
    """The app's one build of the demo parent of the bundled model."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._status = BuildStatus("idle")
        self._started = 0.0
        self._finished: dict[str, float] = {}  # stage -> its seconds, once the next stage began
        self._stage_started = 0.0
        self._reported = 0.0

    def status(self) -> BuildStatus:
        with self._lock:
            status = self._status
        if status.state in ("idle", "cancelled", "failed") and (folder := defaults.demo_parent()):
            return BuildStatus("built", folder=str(folder))  # built by the command line or another process
        if status.state == "building":  # the time left counts down between the build's reports
            since = time.monotonic() - self._reported
            left = None if status.left_s is None else max(status.left_s - since, 0.0)
            return BuildStatus("cancelling" if self._cancel.is_set() else "building", status.stage, status.done, status.total,
                               time.monotonic() - self._started, left)
        return status

    def start(self) -> BuildStatus:
        """Start the build unless it runs or is built (here or elsewhere); returns the status either way."""
        if (status := self.status()).state == "built":
            return status
        with self._lock:
            if self._status.state in ("building", "built"):
                return self._status
            self._cancel.clear()
            self._started = self._stage_started = time.monotonic()
            self._finished = {}
            self._status = BuildStatus("building")
            self._thread = threading.Thread(target=self._run, daemon=True, name="demo parent build")
            self._thread.start()
        return self.status()

    def cancel(self) -> BuildStatus:
        """Stop the build at its next step (a build not running is left as it is)."""
        with self._lock:
            if self._status.state == "building":
                self._cancel.set()
        return self.status()

    def _run(self) -> None:
        try:
            # Keyed as defaults.demo_parent() looks it up: by the bundled model's name, not by where it was converted.
            folder = build_demo_parent(DEFAULT_MODEL, on_progress=self._progress)
            status = BuildStatus("built", folder=str(folder))
        except BuildCancelled:
            status = BuildStatus("cancelled")
        except UserError as exc:
            status = BuildStatus("failed", error=str(exc))
        except Exception as exc:  # noqa: BLE001 -- one line on the page; the log keeps the rest
            status = BuildStatus("failed", error=f"demo parent: the build failed ({exc.__class__.__name__}: {exc}) — "
                                 "see the app's log, then press Build again")
        with self._lock:
            self._status = status

    def _progress(self, stage: str, done: int, total: int) -> None:
        if self._cancel.is_set():
            raise BuildCancelled
        now = time.monotonic()
        with self._lock:
            if stage != self._status.stage and self._status.stage:
                self._finished[self._status.stage] = now - self._stage_started
                self._stage_started = now
            left = time_left(self._finished, stage, done, total, now - self._stage_started)
            self._status = BuildStatus("building", stage, done, total, now - self._started, left)
            self._reported = now


def time_left(finished: dict[str, float], stage: str, done: int, total: int, in_stage_s: float) -> float | None:
    """Seconds left: this host's pace (measured seconds per unit of STAGE_WEIGHTS, over the
    stages finished and this one's steps) times the weight still to go."""
    if stage not in STAGE_WEIGHTS:
        return None
    order = list(STAGE_WEIGHTS)
    measured_weight = sum(STAGE_WEIGHTS[s] for s in finished) + (STAGE_WEIGHTS[stage] * done / total if total else 0.0)
    if measured_weight <= 0:
        return None
    pace = (sum(finished.values()) + in_stage_s) / measured_weight
    remaining = STAGE_WEIGHTS[stage] * (1 - done / total if total else 1.0) + sum(
        STAGE_WEIGHTS[s] for s in order[order.index(stage) + 1:])
    return pace * remaining


def _duration(seconds: float | None) -> str:
    seconds = int(seconds or 0)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
