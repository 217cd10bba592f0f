"""A blind round's texts at one shared pace.

An int8 or FP8 merge decodes faster than its bf16 parents, so a blind pane that fills
first is the merge. Every pane therefore shows the same number of characters, `shown`,
at each moment: the first words appear together, and `shown` follows the slowest pane
still writing. When the slow panes finish first, the texts the faster ones wrote ahead
are released at the pace the round has shown so far, at most CATCH_UP times faster, not
at once; after every model has finished, the rest comes out the same way. A pane's
length then tells only how long its reply is, never how fast its model is
(docs/ui.md, "Blind rounds")."""

from __future__ import annotations

from dataclasses import dataclass

from inference.generation import Reply

CATCH_UP = 2.0  # how much faster than the round's pace so far held-back text may come out
FRAME_S = 0.1  # between releases once every model has finished
FINISH_S = 2.0  # at most this long after the last model finished: the round holds the device queue meanwhile


@dataclass
class SharedPace:
    shown: float = 0.0  # characters every pane may show
    first_at: float | None = None  # when the first characters were shown
    at: float = 0.0  # the last release
    rate: float = 0.0  # characters a second the round showed while it followed its writers
    finishing: float = 0.0  # once every model has finished: the rate that shows the rest within FINISH_S

    def texts(self, replies: list[Reply], now: float) -> list[str]:
        """Each reply's text cut to the shared length, as of `now` (seconds, monotonic)."""
        writing = [len(one.text) for one in replies if not one.done]
        target = float(min(writing) if writing else max((len(one.text) for one in replies), default=0))
        if not writing and not self.finishing:
            self.finishing = max(target - self.shown, 1.0) / FINISH_S
        allowed = self.shown + max(CATCH_UP * self.rate, self.finishing) * (now - self.at)
        capped = self.rate > 0 and target > allowed
        if capped:
            target = allowed
        if target > self.shown:
            self.shown = target
            self.first_at = now if self.first_at is None else self.first_at
        if not capped and self.first_at is not None and now > self.first_at:
            self.rate = self.shown / (now - self.first_at)
        self.at = now
        return [one.text[:int(self.shown)] for one in replies]

    def caught_up(self, replies: list[Reply]) -> bool:
        """Every model has finished and every text is shown whole."""
        return all(one.done for one in replies) and all(len(one.text) <= int(self.shown) for one in replies)
