"""Whose Hugging Face token a Hub request uses.

On a Space with Sign in with Hugging Face (front matter `hf_oauth: true`, which sets
OAUTH_CLIENT_ID), a signed-in visitor's downloads use their own OAuth token: they reach the
gated and private repos their account may, and no other visitor borrows that access.
Everywhere else, and for a visitor not signed in, huggingface_hub picks its own token:
HF_TOKEN (a Space's secret) or the cached `hf auth login`.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import os
import time
from collections.abc import Iterator

# Sign-in on a Space with hf_oauth; SLERP_ARENA_SIGN_IN=1 elsewhere runs Gradio's local
# stand-in, which signs in as the machine's own HF login (a test's Hub server).
SIGN_IN = bool(os.environ.get("OAUTH_CLIENT_ID")) or os.environ.get("SLERP_ARENA_SIGN_IN") == "1"
SIGN_IN_FIX = "sign in with Hugging Face (the button at the top of the page)"
ALLOWED_FOR_S = 600.0  # how long a yes from the Hub is trusted before asking again

_visitor: contextvars.ContextVar[str | None] = contextvars.ContextVar("visitor_token", default=None)
_allowed: dict[tuple[str, str], float] = {}  # (sha256 of the token, repo) -> when the Hub last said yes


@contextlib.contextmanager
def as_visitor(token: str | None) -> Iterator[None]:
    """Hub requests made inside use `token` (a signed-in visitor's), or huggingface_hub's own for None."""
    reset = _visitor.set(token or None)
    try:
        yield
    finally:
        _visitor.reset(reset)


def hub_token() -> str | None:
    """The token to pass to a Hub call: the visitor's, or None (huggingface_hub's own)."""
    return _visitor.get()


def has_token() -> bool:
    from huggingface_hub import get_token

    return hub_token() is not None or get_token() is not None


def check_access(repo_id: str) -> None:
    """Raise the Hub's error when this token may not download `repo_id`, even when its files
    are already here: another visitor with access may have fetched a gated model into the
    Space's shared cache or memory. One request; a yes is trusted for ALLOWED_FOR_S."""
    from huggingface_hub import HfApi, is_offline_mode
    from huggingface_hub.errors import HfHubHTTPError

    if is_offline_mode():  # no Hub to ask: this machine's cache is all there is
        return
    key = (hashlib.sha256((hub_token() or "").encode()).hexdigest(), repo_id)  # no raw token kept
    if time.monotonic() - _allowed.get(key, -ALLOWED_FOR_S) < ALLOWED_FOR_S:
        return
    try:
        HfApi().auth_check(repo_id, token=hub_token())
    except Exception as exc:  # huggingface_hub's HTTP library raises its own transport errors: not ours to import
        status = exc.response.status_code if isinstance(exc, HfHubHTTPError) and exc.response is not None else None
        # The Hub down or busy (no answer, 5xx, 429): a visitor it said yes to before keeps the model.
        if key in _allowed and (status is None or status >= 500 or status == 429):
            return
        raise
    _allowed[key] = time.monotonic()
