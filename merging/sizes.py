"""Sizes as people type them (2GB, 500MB, 1GiB): --shard-size, --max-ram and the app's
Max RAM field share one reading and one error shape."""

from __future__ import annotations

import re

from core.errors import UserError

UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str, field: str, examples: str) -> int:
    """Bytes in `text`; a UserError naming `field` and showing `examples` otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*", str(text))
    if not match or match.group(2).upper() not in UNITS or float(match.group(1)) <= 0:
        raise UserError(field, f"'{text}' is not a size", f"write e.g. {examples}")
    return int(float(match.group(1)) * UNITS[match.group(2).upper()])


def megabytes(nbytes: int) -> str:
    """How sizes are shown back: 128 MB (10^6 bytes, as the fields read them)."""
    return f"{nbytes / 1e6:,.0f} MB"
