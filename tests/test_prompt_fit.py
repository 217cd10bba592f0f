"""A message's prompt against each pane's context and public mode's limit, with the
numbers in one line; a long message's wait from the prefill speed measured here."""

import pytest

from arena.prompt_fit import check_fits, prefill_remark, record_prefills
from core.errors import UserError
from inference import cache
from inference.generation import Reply, ReplyStats


@pytest.fixture
def loaded(tiny_models):
    return cache.MODELS.get(str(tiny_models("llama", 1)), "bf16")  # a context of 256 tokens


def test_a_message_is_measured_in_each_pane_s_template_and_refused_past_its_context(loaded, monkeypatch):
    monkeypatch.delenv("SLERP_ARENA_MAX_PROMPT_TOKENS", raising=False)
    monkeypatch.setenv("SLERP_ARENA_PUBLIC", "0")
    tokens = check_fits([("Parent A", loaded)], "hello there", "", 16, blind=False)
    assert 3 < tokens["Parent A"] < 40
    with pytest.raises(UserError) as refused:
        check_fits([("Parent A", loaded)], "bees " * 300, "", 64, blind=False)
    message = str(refused.value)
    assert message.startswith("message: ") and "tokens in the chat template; Parent A reads 256, 64 of them kept for the reply" in message
    assert message.endswith("— shorten the message, or lower max new tokens")
    with pytest.raises(UserError, match="one of the models reads 256"):  # blind: the pane is not named
        check_fits([("Parent A", loaded)], "bees " * 300, "", 64, blind=True)


def test_public_mode_limits_the_prompt_and_an_owner_can_set_the_limit(loaded, monkeypatch):
    monkeypatch.delenv("SLERP_ARENA_MAX_PROMPT_TOKENS", raising=False)
    monkeypatch.setenv("SLERP_ARENA_PUBLIC", "1")
    check_fits([("Merged", loaded)], "bees " * 20, "", 16, blind=False)  # under 4,096 and the context
    monkeypatch.setenv("SLERP_ARENA_MAX_PROMPT_TOKENS", "20")
    with pytest.raises(UserError, match=r"^message: \d+ tokens in the chat template; this Space takes at most 20 — shorten it"):
        check_fits([("Merged", loaded)], "bees " * 20, "", 16, blind=False)
    monkeypatch.setenv("SLERP_ARENA_MAX_PROMPT_TOKENS", "many")
    with pytest.raises(UserError, match="SLERP_ARENA_MAX_PROMPT_TOKENS: 'many' is not a whole number of tokens"):
        check_fits([("Merged", loaded)], "hi", "", 16, blind=False)


def first_token(prompt_tokens: int, cached_tokens: int, at: float) -> Reply:
    return Reply("m", stats=ReplyStats(prompt_tokens=prompt_tokens, cached_tokens=cached_tokens, first_token_s=at))


def test_a_long_message_says_its_wait_from_the_prefill_speeds_measured_here(loaded, tiny_models, monkeypatch):
    monkeypatch.setattr(loaded, "measured_prefill_tokens_per_s", 0.0)
    assert prefill_remark([("Merged", loaded)], {"Merged": 5000}) == ""  # nothing measured: nothing promised
    other = cache.MODELS.get(str(tiny_models("llama", 2)), "bf16")
    monkeypatch.setattr(other, "measured_prefill_tokens_per_s", 0.0)
    # Prompts go one after another: the second pane's first token came 2 s after the first's, not 4 s after the start.
    record_prefills([(other, first_token(1100, 100, 4.0)), (loaded, first_token(1100, 100, 2.0))])
    assert loaded.measured_prefill_tokens_per_s == 500.0 and other.measured_prefill_tokens_per_s == 500.0
    record_prefills([(loaded, first_token(40, 0, 9.0))])  # too short a prompt to tell a rate
    assert loaded.measured_prefill_tokens_per_s == 500.0
    panes = [("Merged", loaded), ("Parent A", other)]
    assert prefill_remark(panes, {"Merged": 600, "Parent A": 600}) == ""  # 2.4 s: short enough to say nothing
    remark = prefill_remark(panes, {"Merged": 5000, "Parent A": 4000})
    assert remark == (" A long message: up to 5,000 prompt tokens, read by one model after another, so about 18 s on this host "
                      "before every pane has begun.")
