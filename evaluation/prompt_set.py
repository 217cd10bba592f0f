"""A prompt set: fresh conversations to send to every model, each with an optional list
of topic words for scoring ("does the reply address the prompt's subject?").

Two file formats:
- `.txt`: one single-turn prompt per line; blank lines and `#` comments skipped.
- `.jsonl`: one JSON object per line, `{"prompt": "…", "topic": [words]}` or, for a
  multi-turn case, `{"messages": [{"role": "user", "content": "…"}, …], "topic": […]}`
  ending with a user turn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.errors import UserError

DEMO_PROMPTS = Path(__file__).resolve().parent.parent / "prompts" / "demo.jsonl"
# The Chat tab's suggestions: prompts of the seen half on which the demo merge (V-shape)
# answered on topic in a pirate's voice with seeds 1-3 (docs/evaluation.md, "Demo in chat").
CHAT_EXAMPLES = DEMO_PROMPTS.with_name("chat_examples.jsonl")


@dataclass(frozen=True)
class PromptCase:
    messages: tuple[dict[str, str], ...]  # ends with the user turn to answer
    topic: tuple[str, ...] = ()  # lower-case word starts; the reply is on topic when one appears

    @property
    def text(self) -> str:
        """The turn being answered (what a table or a JSON line shows)."""
        return self.messages[-1]["content"]


def read_prompts(path: str | Path, field: str) -> list[PromptCase]:
    file = Path(path)
    if not file.is_file():
        raise UserError(field, f"file '{file}' not found", "give a .txt file with one prompt per line, or a .jsonl prompt set")
    lines = [(n, line.strip()) for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line and not line.startswith("#")]
    cases = [_case(line, n, file, field) if file.suffix == ".jsonl" else PromptCase(({"role": "user", "content": line},))
             for n, line in lines]
    if not cases:
        raise UserError(field, f"'{file}' holds no prompt", "write one prompt per line")
    return cases


def _case(line: str, number: int, file: Path, field: str) -> PromptCase:
    where = f"{file.name} line {number}"
    try:
        data = json.loads(line)
        messages = data["messages"] if "messages" in data else [{"role": "user", "content": data["prompt"]}]
        case = PromptCase(tuple({"role": m["role"], "content": str(m["content"])} for m in messages),
                          tuple(str(w).lower() for w in data.get("topic", ())))
    except (ValueError, KeyError, TypeError):
        raise UserError(field, f"{where} is not a prompt object", 'write {"prompt": "…", "topic": ["word", …]}') from None
    if not case.messages or case.messages[-1]["role"] != "user":
        raise UserError(field, f"{where} does not end with a user turn", "end each conversation with the user's message")
    return case


def split_halves(cases: list[PromptCase]) -> tuple[list[PromptCase], list[PromptCase]]:
    """(seen, held out): alternate cases, so both halves mix questions, tasks and multi-turn.
    Builds may learn from the first half; reports are computed on the second."""
    return cases[0::2], cases[1::2]
