"""Identity leaks: a blind reply that names a model family, its maker, or one of the
compared models' repo / folder names gives the round away, so its vote is flagged."""

from __future__ import annotations

import contextlib
import re
from pathlib import PurePath

from core.architectures import FAMILIES
from core.errors import UserError
from core.sources import BUNDLED, BUNDLED_PREFIX, HUB_ID, endpoint_of, kind_of

# The families' names and makers come from their descriptions; these are the rest.
NAMES = tuple(dict.fromkeys(("SmolLM", "Hugging Face", "HuggingFace", "OpenAI", "ChatGPT",
                             *(name for family in FAMILIES for name in family.called))))
MIN_REF_NAME = 4  # shorter folder names ("a", "out") would flag ordinary words


def names_of(refs: list[str]) -> list[str]:
    """The names a reply could leak for these model references: a Hub id's owner and
    name, a folder's or file's name, a bundled model's name and its Hub id, and for an
    endpoint the same for the name it serves the model under."""
    names: list[str] = []
    for ref in filter(None, map(_naming_part, refs)):
        if ref.startswith(BUNDLED_PREFIX):
            name = ref[len(BUNDLED_PREFIX):]
            names += [name, *BUNDLED.get(name, ("", "", ""))[2].split("/")]
        else:
            names += ref.split("/") if HUB_ID.match(ref) else [PurePath(ref).stem]
    return [n for n in dict.fromkeys(names) if len(n) >= MIN_REF_NAME]


def _naming_part(ref: str) -> str:
    """An endpoint's model name (after '#'); for anything else what precedes a '#t=…'
    preview suffix."""
    with contextlib.suppress(UserError):
        if kind_of(ref) == "endpoint":
            return endpoint_of(ref).model
    return ref.strip().split("#")[0]


def identity_leak(replies: dict[str, str], parent_refs: list[str]) -> str:
    """'' if no reply names a model family, a maker or a parent, else why the round is flagged."""
    for label, text in replies.items():
        for name in (*NAMES, *names_of(parent_refs)):
            # not inside a longer word ("metadata", "llamas"), digits may follow ("Llama3", "SmolLM2")
            if re.search(rf"(?<![a-z0-9]){re.escape(name)}(?![a-z])", text, re.IGNORECASE):
                return f"{label}'s reply names '{name}'"
    return ""
