"""ZeroGPU Spaces: a GPU is attached only inside functions wrapped in `spaces.GPU`.

On such a Space (the `spaces` package importable and SPACES_ZERO_GPU set, as Hugging Face
sets it on ZeroGPU hardware) `gpu(duration)` wraps a function in `spaces.GPU`: each call
runs in a forked worker process, its arguments and results (each yielded value, for a
generator) travel pickled, and the call is admitted only if `duration` (seconds, or a
function of the call's arguments) fits the visitor's daily quota. Everywhere else the
function runs as it is. The wrapping happens at the first call, so it follows the
environment of the process that calls it.

Two things cross back as the caller expects them: a UserError raised in the worker (spaces
would report only its class name, spaces/zero/wrappers.py:392-400, so it travels as a value
and is raised again here), and a refusal by ZeroGPU (spaces raises a gr.Error titled
"ZeroGPU quota exceeded" and the like, spaces/zero/client.py:153-207, 234-259), which
becomes a UserError in the visitor's words that says what to do instead.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import inspect
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from core.errors import UserError

_wrapped: dict[Callable, Callable] = {}  # function -> its spaces.GPU wrapper, built at its first call on ZeroGPU


def on_zerogpu() -> bool:
    return importlib.util.find_spec("spaces") is not None and os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


def start() -> None:
    """On ZeroGPU, import `spaces` at the app's start, as its docs ask: before any model is
    placed (then torch's CUDA is emulated in this process, models load on `cuda`, and a GPU
    call moves them rather than reading them from disk) and before Gradio launches (its
    launch hook reports the Space's start-up to the device API)."""
    if on_zerogpu():
        import spaces  # noqa: F401


def forget_wrappers() -> None:
    """Drop the spaces.GPU wrappers built so far: the next call wraps again, with the
    `spaces` module imported then (tests switch ZeroGPU on and off)."""
    _wrapped.clear()


@dataclass(frozen=True)
class _Raised:
    """A UserError raised in the worker, sent back as a value (core/errors.py pickles it)."""
    error: UserError


def _catching_user_errors(function: Callable) -> Callable:
    """What spaces.GPU runs in its worker: `function`, with a UserError returned (or yielded
    last) as a _Raised instead of raised."""
    if inspect.isgeneratorfunction(function):
        @functools.wraps(function)
        def stream(*args, **kwargs):
            try:
                yield from function(*args, **kwargs)
            except UserError as exc:
                yield _Raised(exc)
        return stream

    @functools.wraps(function)
    def call(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except UserError as exc:
            return _Raised(exc)
    return call


def gpu(duration: int | Callable[..., int], instead: str = ""):
    """`@gpu(seconds)` or `@gpu(seconds_of)`: spaces.GPU(duration=…) on ZeroGPU, nothing
    elsewhere. `instead`: what a visitor refused by ZeroGPU can do without it (the end of
    the refusal's fix, e.g. "use an endpoint pane")."""
    def wrap(function):
        def target() -> Callable:
            if not on_zerogpu():
                return function
            if function not in _wrapped:  # one wrapper per function: it keeps the worker processes it forked
                import spaces

                _wrapped[function] = spaces.GPU(duration=duration)(_catching_user_errors(function))
            return _wrapped[function]

        if inspect.isgeneratorfunction(function):
            @functools.wraps(function)
            def stream(*args, **kwargs):
                with _refusals_as_user_errors(instead):
                    inner = target()(*args, **kwargs)
                    try:
                        for item in inner:
                            if isinstance(item, _Raised):
                                raise item.error
                            yield item
                    finally:
                        inner.close()  # on ZeroGPU: sets the worker's stop event and waits for it to end the generator
            return stream

        @functools.wraps(function)
        def call(*args, **kwargs):
            with _refusals_as_user_errors(instead):
                result = target()(*args, **kwargs)
            if isinstance(result, _Raised):
                raise result.error
            return result
        return call
    return wrap


@contextlib.contextmanager
def _refusals_as_user_errors(instead: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        if (error := refusal(exc, instead)) is None:
            raise
        raise error from None


def refusal(exc: BaseException, instead: str = "") -> UserError | None:
    """ZeroGPU's refusal of a call (the gr.Error spaces raises, by its title and message:
    spaces/zero/client.py:153-207, 234-259) as a UserError for the visitor; None for any
    other exception."""
    title = getattr(exc, "title", None)
    if not isinstance(title, str) or not title.startswith("ZeroGPU"):
        return None
    message = str(getattr(exc, "message", exc))
    signed_in = "free ZeroGPU" in message or "Pro ZeroGPU" in message
    sign_in = [] if signed_in else ["sign in with Hugging Face for more GPU time"]
    later = _when(message)
    if asked := re.search(r"\((\d+)s requested vs\. (\d+)s left\)", message):
        return UserError("GPU quota", f"this needs up to {asked[1]} s of GPU time and your ZeroGPU quota has {asked[2]} s left",
                         _any_of(*sign_in, f"wait {later} for it to refill", instead))
    if "No GPU was available" in message:
        return UserError("GPU", "no GPU was free on ZeroGPU", _any_of("try again in a minute", *sign_in, instead))
    if title == "ZeroGPU quota exceeded" and "GPU limit" in message:  # a call with no visitor token: the Space's own pool
        return UserError("GPU quota", "this Space has used up the GPU time it gives visitors who are not signed in",
                         _any_of("sign in with Hugging Face to use your own quota", "try again later", instead))
    if title == "ZeroGPU quota exceeded":  # "You have exceeded your ZeroGPU runs limit"
        return UserError("GPU quota", "you have used up your ZeroGPU runs for now", _any_of(*sign_in, "try again later", instead))
    if title == "ZeroGPU illegal duration":
        seconds = re.search(r"\((\d+)s\)", message)
        return UserError("GPU quota", f"this asks for {seconds[1] if seconds else 'more'} s of GPU time, more than ZeroGPU "
                         "allows in one call", _any_of(*sign_in, instead or "ask for less"))
    if title == "ZeroGPU pending credits exceeded":
        return UserError("GPU quota", "too many of your GPU tasks are running at once", _any_of("wait until one ends", instead))
    return None


def _any_of(*fixes: str) -> str:
    fixes = tuple(f for f in fixes if f)
    return fixes[0] if len(fixes) == 1 else ", ".join(fixes[:-1]) + f", or {fixes[-1]}"


def _when(message: str) -> str:
    """spaces' "Try again in 1 day, 2:03:04." (a timedelta) as "about 27 h"."""
    found = re.search(r"Try again in (?:(\d+) days?, )?(\d+):(\d\d):(\d\d)", message)
    if found is None:
        return "a while"
    days, hours, minutes, seconds = (int(v or 0) for v in found.groups())
    total_min = math.ceil(((days * 24 + hours) * 60 + minutes) + seconds / 60)
    return f"about {total_min} min" if total_min < 90 else f"about {round(total_min / 60)} h"
