"""Where the app keeps its files, and whether it runs on a Hugging Face Space. Every
folder can be moved by an environment variable, so tests and Spaces point them elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the checkout (or the installed tree)
ON_SPACE = bool(os.environ.get("SPACE_ID"))  # Hugging Face sets SPACE_ID on every Space


def outputs_root() -> Path:
    """Merged models."""
    return Path(os.environ.get("SLERP_ARENA_OUTPUTS", ROOT / "outputs"))


def models_root() -> Path:
    """Local parents a public Space may read (besides outputs and Hub ids)."""
    return Path(os.environ.get("SLERP_ARENA_MODELS", ROOT / "models"))

