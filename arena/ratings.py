"""Does the merge beat its parents? Each 3-way vote becomes pairwise outcomes, a
Bradley–Terry model is fitted per merge config, and a bootstrap over votes gives 95%
intervals for "Merged beats Parent A / Parent B". Also a CLI:

    python -m arena VOTES.sqlite [--config HASH] [--include-flagged]
"""

from __future__ import annotations

import argparse
import html
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arena.votes import PANE_LABELS, Vote, VoteStore

BOOTSTRAP_ROUNDS = 1000
PRIOR_TIES = 0.5  # one virtual tie per pair (half a win each way) keeps the fit finite when one side always wins
MM_ITERATIONS = 200
MIN_VOTES_FOR_INTERVAL = 10  # below this a bootstrap interval is too rough to mean anything (one vote gave 75% [75%–75%])
CARD_MARKER = "slerp-arena-results"


@dataclass(frozen=True)
class PairResult:
    model: str  # "Merged"
    rival: str  # "Parent A"
    win_rate: float  # P(model beats rival) under the fitted Bradley–Terry model, ties counted as half
    low: float | None  # the 95% interval; None below MIN_VOTES_FOR_INTERVAL votes
    high: float | None
    votes: int  # votes in which both answered

    def interval(self) -> str:
        return f"{self.low:.0%}–{self.high:.0%}" if self.low is not None else f"no interval below {MIN_VOTES_FOR_INTERVAL} votes"


@dataclass(frozen=True)
class Results:
    config_hash: str
    votes: int  # votes counted
    flagged: int  # flagged votes left out (0 when they were included)
    pairs: list[PairResult]

    def sentence(self) -> str:
        if not self.pairs:
            return f"No counted votes for merge config `{self.config_hash}` yet."
        beats = ", ".join(f"beats {p.rival} in {p.win_rate:.0%} [{p.interval()}]" for p in self.pairs)
        left_out = f" ({self.flagged} flagged left out)" if self.flagged else ""
        return f"{self.pairs[0].model} {beats}, {self.votes} votes{left_out}."


def pairwise(vote: Vote) -> dict[tuple[str, str], float]:
    """(a, b) -> score of a against b (1 win, 0.5 tie, 0 loss), a before b in pane order.
    Best beats the others; the others beat worst; tie: the panes not voted worst are
    equal; all bad: all equal. A pair the vote says nothing about is left out."""
    labels = sorted(vote.labels, key=_order)
    scores: dict[tuple[str, str], float] = {}

    def put(winner: str, loser: str, score: float = 1.0) -> None:
        if winner != loser and winner in labels and loser in labels:
            a, b = sorted((winner, loser), key=_order)
            scores[(a, b)] = score if a == winner else 1.0 - score

    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            if vote.all_bad or (vote.tie and vote.worst not in (a, b)):
                put(a, b, 0.5)
    for other in labels:
        if vote.best:
            put(vote.best, other)
        if vote.worst and other != vote.best:
            put(other, vote.worst)
    return scores


def _order(label: str) -> int:
    return PANE_LABELS.index(label) if label in PANE_LABELS else len(PANE_LABELS)


def fit_bradley_terry(wins: np.ndarray) -> np.ndarray:
    """Strengths p (summing to 1) from wins[..., i, j] = (fractional) wins of i over j,
    by Hunter's MM iterations; leading axes are independent fits (the bootstrap)."""
    games = wins + np.swapaxes(wins, -1, -2)
    total = wins.sum(-1)
    p = np.ones(wins.shape[:-1])
    for _ in range(MM_ITERATIONS):
        denom = (games / (p[..., :, None] + p[..., None, :])).sum(-1)
        p = np.where(denom > 0, total / np.where(denom > 0, denom, 1.0), p)
        p = p / p.sum(-1, keepdims=True)
    return p


def results(votes: list[Vote], config_hash: str, include_flagged: bool = False, rounds: int = BOOTSTRAP_ROUNDS,
            seed: int = 0) -> Results:
    """Merged against each parent that appears in the votes: BT win rate and a 95%
    percentile interval from `rounds` bootstrap resamples of the votes."""
    counted = [v for v in votes if include_flagged or not v.flagged]
    flagged = 0 if include_flagged else len(votes) - len(counted)
    outcomes = [pairwise(v) for v in counted]
    labels = sorted({label for o in outcomes for pair in o for label in pair}, key=_order)
    if "Merged" not in labels:
        return Results(config_hash, len(counted), flagged, [])
    index = {label: i for i, label in enumerate(labels)}
    k = len(labels)
    per_vote = np.zeros((len(outcomes), k, k))
    for row, outcome in zip(per_vote, outcomes, strict=True):
        for (a, b), score in outcome.items():
            row[index[a], index[b]] += score
            row[index[b], index[a]] += 1.0 - score
    prior = PRIOR_TIES * (1.0 - np.eye(k))
    point = fit_bradley_terry(per_vote.sum(0) + prior)
    resampled = np.random.default_rng(seed).multinomial(len(outcomes), np.full(len(outcomes), 1.0 / len(outcomes)), size=rounds)
    boot = fit_bradley_terry(np.einsum("bv,vij->bij", resampled, per_vote) + prior)
    m = index["Merged"]
    pairs = []
    for rival in labels:
        if rival == "Merged":
            continue
        r = index[rival]
        rates = boot[:, m] / (boot[:, m] + boot[:, r])
        both = sum(1 for v in counted if "Merged" in v.labels and rival in v.labels)
        enough = both >= MIN_VOTES_FOR_INTERVAL
        low, high = (float(np.percentile(rates, 2.5)), float(np.percentile(rates, 97.5))) if enough else (None, None)
        pairs.append(PairResult("Merged", rival, float(point[m] / (point[m] + point[r])), low, high, both))
    return Results(config_hash, len(counted), flagged, pairs)


def table_markdown(res: Results) -> str:
    if not res.pairs:
        return res.sentence()
    rows = "\n".join(f"| Merged vs {p.rival} | {p.win_rate:.0%} | {p.interval()} | {p.votes} |" for p in res.pairs)
    return (f"{res.sentence()}\n\n| pair | Merged wins | 95% CI | votes |\n|---|---|---|---|\n{rows}\n\n"
            f"Bradley–Terry fit over pairwise outcomes (ties count half), {BOOTSTRAP_ROUNDS} bootstrap resamples of the votes; "
            f"merge config `{res.config_hash}`.")


def plot_html(res: Results) -> str:
    """Point and 95% interval per pair on a 0–100% axis, as inline SVG (no plotting
    library needed); 50% (no difference) is the dashed line."""
    if not res.pairs:
        return f"<p>{html.escape(res.sentence())}</p>"
    width, left, right, row_h, top = 640, 150, 20, 34, 28
    height = top + row_h * len(res.pairs) + 30

    def x(rate: float) -> float:
        return left + rate * (width - left - right)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="Merged win rate against each parent with 95% intervals" style="font:13px sans-serif">',
             f'<text x="{left}" y="16">Merged wins against… (point: Bradley–Terry estimate; bar: 95% CI; n = {res.votes} votes)</text>']
    for tick in (0, 0.25, 0.5, 0.75, 1):
        dash = ' stroke-dasharray="4 3"' if tick == 0.5 else ""
        parts.append(f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{top}" y2="{height - 24}" stroke="#999"{dash}/>'
                     f'<text x="{x(tick):.1f}" y="{height - 8}" text-anchor="middle">{tick:.0%}</text>')
    for i, p in enumerate(res.pairs):
        y = top + row_h * i + row_h / 2
        bar = (f'<line x1="{x(p.low):.1f}" x2="{x(p.high):.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="#1f6feb" stroke-width="3"/>'
               if p.low is not None else
               f'<text x="{x(1):.1f}" y="{y + 4:.1f}" text-anchor="end" fill="#555">{p.interval()}</text>')
        parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{html.escape(p.rival)} (n={p.votes})</text>'
                     f'{bar}<circle cx="{x(p.win_rate):.1f}" cy="{y:.1f}" r="6" fill="#1f6feb"/>'
                     f'<text x="{x(p.win_rate):.1f}" y="{y - 9:.1f}" text-anchor="middle">{p.win_rate:.0%}</text>')
    parts.append("</svg>")
    return "".join(parts)


def card_section(res: Results) -> str:
    """The model card's arena section (Markdown)."""
    return f"## Arena results (Slerp Arena blind votes)\n\n{table_markdown(res)}\n"


def config_results(store: VoteStore, config_hash: str, include_flagged: bool = False) -> Results:
    return results(store.votes(config_hash), config_hash, include_flagged)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m arena", description="Does the merge beat its parents? (from a votes database)")
    parser.add_argument("votes", type=Path, help="the SQLite votes file (the app's SLERP_ARENA_VOTES, default data/votes.sqlite)")
    parser.add_argument("--config", help="one merge config hash (default: every config in the file)")
    parser.add_argument("--include-flagged", action="store_true", help="count votes whose replies named a model or maker")
    args = parser.parse_args(argv)
    if not args.votes.is_file():
        print(f"votes: '{args.votes}' does not exist — give the path of a votes .sqlite file", file=sys.stderr)
        return 2
    store = VoteStore(args.votes)
    configs = [args.config] if args.config else store.configs()
    if not configs:
        print("No votes in this file.")
    for digest in configs:
        res = config_results(store, digest, args.include_flagged)
        print(f"merge config {digest}: {res.sentence()}")
        for p in res.pairs:
            print(f"  Merged vs {p.rival:<8}  win rate {p.win_rate:6.1%}  95% CI {p.interval()}  n = {p.votes}")
    return 0

