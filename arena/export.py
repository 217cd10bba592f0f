"""A chat session as files a visitor takes away: every pane's conversation with, per
reply, the settings it used, and the votes. Before a blind round is judged it is
anonymous: Model 1/2/3, no sources, no precision, no votes."""

from __future__ import annotations

import json
from dataclasses import asdict

from arena.rounds import ArenaSession


def export_json(session: ArenaSession) -> str:
    """Every pane's conversation with, per reply, the settings it used and whether it was
    stopped. Before the reveal it is anonymous: Model 1/2/3, no sources, no precision."""
    reveal = session.revealed
    panes = []
    for name, pane in zip(session.display_labels(), session.panes, strict=True):
        turns = [asdict(t) if reveal else {"prompt": t.prompt, "settings": t.settings, "system_prompt": t.system_prompt,
                                           "stopped": t.stopped} for t in pane.turns]
        panes.append({"label": pane.label, "model": pane.ref, "precision": pane.precision} if reveal else {"label": name})
        panes[-1].update(history=pane.history, turns=turns)
    return json.dumps({"anonymized": not reveal, "panes": panes, "votes": session.votes if reveal else []}, indent=2)


def export_markdown(session: ArenaSession) -> str:
    reveal = session.revealed
    names = [p.label for p in session.panes] if reveal else session.display_labels()
    lines = ["# Slerp Arena comparison", ""]
    if reveal:
        lines += ["| pane | model | precision |", "|---|---|---|",
                  *[f"| {p.label} | `{p.ref}` | {p.precision} |" for p in session.panes if p.ref], ""]
    else:
        lines += ["Blind round, not yet judged: the panes are shown as Model 1/2/3 and their models are left out.", ""]
    turns = max((len(p.history) for p in session.panes), default=0)
    for i in range(0, turns, 2):
        prompt = next((p.history[i]["content"] for p in session.panes if len(p.history) > i), "")
        lines += ["## User", "", prompt, ""]
        for name, p in zip(names, session.panes, strict=True):
            if len(p.history) > i + 1:
                turn = p.turns[i // 2] if len(p.turns) > i // 2 else None
                settings = ", ".join(f"{k}={v}" for k, v in turn.settings.items()) if turn else ""
                shown = "; ".join(filter(None, [turn.line(reveal) if turn else "", settings]))
                lines += [f"### {name}", "", p.history[i + 1]["content"], "", f"*{shown}*" if shown else "", ""]
    for v in session.votes if reveal else []:
        flag = f" (flagged: {v['flagged']})" if v.get("flagged") else ""
        lines.append(f"Vote on “{v['prompt']}”: " + ", ".join(f"{verdict} = {label or '—'}" for verdict, label in v["verdicts"]) + flag)
    return "\n".join(lines) + "\n"
