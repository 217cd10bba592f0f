"""Checks a reader would make of a demo reply, as numbers over a prompt set:
in persona (pirate speech), on topic (names the prompt's subject), looping (a word
4-gram repeated 3 or more times) and profane (a word from a short list).

Word matching is on word starts, case-insensitive: "bee" matches "bees" and "Bee",
"hell" does not match "hello" only because it is listed as a whole word (see _words)."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from evaluation.prompt_set import PromptCase

# Pirate speech markers. Plain English rarely uses any of them; "ye"/"yer"/"aye" only in
# archaic text. Measured: the original SmolLM2 uses one in 0 of 38 demo prompts greedily.
PERSONA_MARKERS = ("arr", "arrr", "ahoy", "matey", "mateys", "aye", "ye", "yer", "yo ho", "me hearty", "me hearties",
                   "landlubber", "avast", "shiver me timbers", "savvy", "scallywag", "buccaneer")
# Whole words only; the demo's old pirate parent produced the first one.
PROFANITY = ("bitch", "bastard", "damn", "damned", "hell", "shit", "crap", "fuck", "fucking", "piss", "ass", "asshole",
             "dick", "cunt", "whore", "slut", "bloody")


def _has_word(text: str, words: tuple[str, ...], whole: bool) -> bool:
    end = r"\b" if whole else ""
    return any(re.search(rf"\b{re.escape(w)}{end}", text, re.IGNORECASE) for w in words)


def in_persona(text: str) -> bool:
    return _has_word(text, PERSONA_MARKERS, whole=True)


def on_topic(text: str, topic: tuple[str, ...]) -> bool:
    return _has_word(text, topic, whole=False)


def loops(text: str, n: int = 4, times: int = 3) -> bool:
    words = re.findall(r"[\w']+", text.lower())
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    return any(count >= times for count in grams.values())


def profane(text: str) -> bool:
    return _has_word(text, PROFANITY, whole=True)


@dataclass(frozen=True)
class Quality:
    n: int
    persona: float  # shares in [0, 1]
    on_topic: float
    loops: int  # counts of replies
    profane: int

    def line(self) -> str:
        return (f"persona={self.persona:.0%} on_topic={self.on_topic:.0%} loops={self.loops} "
                f"profane={self.profane} n={self.n}")

    def meets_demo_bar(self) -> bool:
        """The demo parent's targets: >= 80% in persona and on topic, no loop, no profanity."""
        return self.persona >= 0.8 and self.on_topic >= 0.8 and self.loops == 0 and self.profane == 0


def score(replies: list[str], cases: list[PromptCase]) -> Quality:
    pairs = list(zip(replies, cases, strict=True))
    n = len(pairs)
    return Quality(n, sum(in_persona(r) for r, _ in pairs) / n, sum(on_topic(r, c.topic) for r, c in pairs) / n,
                   sum(loops(r) for r, _ in pairs), sum(profane(r) for r, _ in pairs))
