"""Whether a message fits every pane before any prefill starts, and how long a long one's
prefill will take on this host.

A message is refused, in one line with the numbers, when its prompt alone (no older turn
can be dropped to make room) exceeds a pane's context less the reply's share, or the
limit public mode sets (core.policy.max_prompt_tokens). The check runs when the message is
taken, for the panes whose models are loaded, and again once every pane's model is."""

from __future__ import annotations

from core.errors import UserError
from core.policy import max_prompt_tokens
from inference.chat import message_tokens
from inference.generation import Reply
from inference.loading import LoadedModel

MIN_MEASURED_TOKENS = 64  # a shorter prompt's time is mostly fixed costs, not its rate
LONG_PREFILL_S = 3.0  # a wait worth saying before it starts


def check_fits(panes: list[tuple[str, LoadedModel]], message: str, system_prompt: str, max_new_tokens: int,
               blind: bool) -> dict[str, int]:
    """Each pane's prompt tokens for `message` (pane label -> tokens), or a UserError
    naming the numbers. Blind, the pane is not named: its context could tell the model."""
    limit = max_prompt_tokens()
    tokens = {label: message_tokens(model.tokenizer, message, system_prompt) for label, model in panes}
    for (label, model), count in zip(panes, tokens.values(), strict=True):
        if limit is not None and count > limit:
            raise UserError("message", f"{count:,} tokens in the chat template; this Space takes at most {limit:,}",
                            "shorten it, or split it over several messages")
        context = model.context_length
        reply = min(max_new_tokens, context // 2)
        if count > context - reply:
            who = "one of the models" if blind else label
            raise UserError("message", f"{count:,} tokens in the chat template; {who} reads {context:,}, {reply:,} of "
                            "them kept for the reply", "shorten the message, or lower max new tokens")
    return tokens


def prefill_remark(panes: list[tuple[str, LoadedModel]], tokens: dict[str, int]) -> str:
    """A long message's wait before the last pane's first words, from the prefill rates
    measured on this host ('' for a short one, or where no rate is measured yet). Prompts
    are computed one after another (inference/sharing.py), so the panes' times add up."""
    seconds = sum(tokens[label] / model.measured_prefill_tokens_per_s for label, model in panes
                  if model.measured_prefill_tokens_per_s)
    if seconds < LONG_PREFILL_S:
        return ""
    return (f" A long message: up to {max(tokens.values()):,} prompt tokens, read by one model after another, so about "
            f"{seconds:.0f} s on this host before every pane has begun.")


def record_prefills(round_: list[tuple[LoadedModel, Reply]]) -> None:
    """Each model's prefill rate from a round's first tokens, where its prompt was long
    enough to tell. The round's prompts are computed one after another, so a pane's own
    prefill is the time from the previous pane's first token to its own, not from the start."""
    previous = 0.0
    for model, reply in sorted(round_, key=lambda pair: pair[1].stats.first_token_s or float("inf")):
        first = reply.stats.first_token_s
        if first is None:
            continue
        own, previous = first - previous, first
        computed = reply.stats.prompt_tokens - reply.stats.cached_tokens
        if computed >= MIN_MEASURED_TOKENS and own > 0:
            model.measured_prefill_tokens_per_s = computed / own
