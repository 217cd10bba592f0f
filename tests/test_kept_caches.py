"""A conversation's next turn reuses its last turn's KV cache (inference/kept_caches.py):
the replies are those of a fresh prefill, and the reuse ends exactly where it must."""

import gc
import threading
import time
import weakref

import pytest
import torch

from arena.rounds import ArenaSession, add_message, reply
from core.cpu import cpu_flags
from inference import GenerationSettings, build_prompt, cache, generate_reply, load_model, scheduler
from inference.attention import attend_kept
from inference.kept_caches import REUSE_ENV, KeptCaches, common_length
from testkit.tiny_models import GEMMA_LIKE, build_tiny_model, lean_families

GREEDY = GenerationSettings(temperature=0.0, max_new_tokens=10, repetition_penalty=1.0)
TURNS = ["hello how are you?", "The capital of France is Paris.", "SLERP merges two language models.",
         "I am fine, thank you.", "The capital of Italy is Rome.", "how are you? hello"]


def converse(loaded, conversation: str, settings: GenerationSettings = GREEDY, system_prompt: str = "") -> list:
    """Six turns, each answering the history so far; the replies."""
    history, replies = [], []
    for message in TURNS:
        history.append({"role": "user", "content": message})
        one = generate_reply(loaded, history, settings, threading.Event(), system_prompt, conversation=conversation)
        assert not one.error, one.error
        history.append({"role": "assistant", "content": one.text})
        replies.append(one)
    return replies


def same_replies(reused: list, fresh: list) -> None:
    assert [r.text for r in reused] == [r.text for r in fresh]
    assert [r.stats.new_tokens for r in reused] == [r.stats.new_tokens for r in fresh]


@pytest.mark.parametrize("arch", lean_families())
def test_a_six_turn_conversation_reuses_each_turn_and_replies_as_a_fresh_prefill(tiny_models, arch):
    """Greedy in fp32: every turn's reply is token for token the fresh prefill's, while each
    turn after the first computes only what the last turn's cache does not hold."""
    loaded = load_model(str(tiny_models(arch, 3, sliding_window=1024, max_positions=1024)), "fp32")
    fresh, reused = converse(loaded, ""), converse(loaded, f"six-turns-{arch}")
    same_replies(reused, fresh)
    assert not any(r.notice for r in reused)  # no turn was dropped to fit the context
    assert reused[0].stats.cached_tokens == 0 and all(r.stats.cached_tokens == 0 for r in fresh)
    for before, after in zip(reused, reused[1:], strict=False):  # the whole last prompt came back (a random model's reply is
        assert after.stats.cached_tokens >= before.stats.prompt_tokens > 0  # broken UTF-8: its text tokenizes otherwise)


def test_a_gemma2_pane_folds_the_system_prompt_into_the_first_turn_and_still_reuses_each_turn(tmp_path):
    """Gemma's template has no system role: the system prompt is folded into the first user
    turn, which every later prompt starts with, so each turn still continues the kept cache
    and replies as a fresh prefill does."""
    loaded = load_model(str(build_tiny_model(tmp_path / "gemma2", "gemma2", 4, chat_template=GEMMA_LIKE)), "fp32")
    assert loaded.decoder is not None
    fresh, reused = converse(loaded, "", system_prompt="Be brief."), converse(loaded, "gemma2-system", system_prompt="Be brief.")
    same_replies(reused, fresh)
    assert "<start_of_turn>user\nBe brief.\n\nhello how are you?" in prompt_text(loaded, [{"role": "user", "content": TURNS[0]}],
                                                                                   "Be brief.")
    assert all(r.stats.cached_tokens > 0 for r in reused[1:])


def test_a_growing_conversation_copies_its_cache_on_few_turns(llama, monkeypatch):
    """Each turn's prompt outgrows the last turn's cache; a cache grows with room for two
    more turns like the one that outgrew it, so most turns continue it in place instead of
    copying it into a new one (the replies stay a fresh prefill's: the six-turn test)."""
    made = []
    real = type(llama.decoder).new_cache
    monkeypatch.setattr(type(llama.decoder), "new_cache", lambda self, length: made.append(length) or real(self, length))
    replies = converse(llama, "growing")
    assert all(r.stats.cached_tokens > 0 for r in replies[1:])
    assert len(made) <= 3, made  # turn 1, then a copy on two of the five turns after it (seen: 35, 202, 341 positions)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_smollm2_logits_after_a_kept_cache_stay_within_the_decode_bound(smollm2_dir, precision):
    """The real model, whose kept caches the C decode step filled: at every turn of six,
    the next token's logits from the kept cache plus the new tokens are within 4% (relative
    L2; measured 0.5-2.1% with the C kernels, 0.4-0.8% with SLERP_ARENA_KERNELS=torch) of a
    fresh prefill of the whole prompt, and the token the fresh prefill picks is
    this one's pick or within 1% of it (a near tie). The replies' keys came from decode,
    whose attention is float32 where the fresh prefill's SDPA rounds via bf16, and whose
    projections round differently, so a reply may part from a fresh prefill's at a near tie,
    as decode's may from generate's. (The fresh prefill is the model's own forward within
    test_decoder.py's bound; here it stands in for it because the model's bf16 forward is
    emulated on CPUs without native bf16, 7x slower.)"""
    loaded = load_model("bundled:SmolLM2-135M-Instruct", precision)
    decoder, settings, history = loaded.decoder, GenerationSettings(temperature=0.0, max_new_tokens=16), []
    for turn, message in enumerate(TURNS):
        history.append({"role": "user", "content": message})
        ids = prompt_ids(loaded, history)
        with torch.inference_mode():
            cache, reused = decoder.cache_for(ids, len(ids) + 1, f"smollm2-{precision}")
            logits = decoder.forward(torch.tensor([ids[reused:]]), reused, cache)[0]
            full = decoder.forward(torch.tensor([ids]), 0, decoder.new_cache(len(ids)))[0]
        error = float((logits - full).norm() / full.norm())
        near_tie = float(logits.max() - logits[full.argmax()]) <= 0.01 * float(full.abs().max())  # the forward's pick, or a tie
        assert error < 0.04 and near_tie, (turn, error)
        assert (reused > len(ids) // 2) == (turn > 0), (turn, reused, len(ids))
        one = generate_reply(loaded, history, settings, threading.Event(), conversation=f"smollm2-{precision}")  # kept for the next turn
        history.append({"role": "assistant", "content": one.text})


@pytest.fixture
def llama(tiny_models):
    return load_model(str(tiny_models("llama", 3)), "fp32")


def first_turn(loaded, conversation: str, system_prompt: str = "") -> tuple[list, object]:
    history = [{"role": "user", "content": TURNS[0]}]
    return history, generate_reply(loaded, history, GREEDY, threading.Event(), system_prompt, conversation=conversation)


def prompt_text(loaded, history: list, system_prompt: str = "") -> str:
    return build_prompt(loaded.tokenizer, history, system_prompt, loaded.context_length, GREEDY.max_new_tokens).text


def prompt_ids(loaded, history: list, system_prompt: str = "") -> list[int]:
    return build_prompt(loaded.tokenizer, history, system_prompt, loaded.context_length, GREEDY.max_new_tokens).input_ids


def test_regenerate_reuses_the_prompt_and_recomputes_the_reply(llama):
    history, first = first_turn(llama, "regenerate")
    again = generate_reply(llama, history, GREEDY, threading.Event(), conversation="regenerate")
    assert again.stats.cached_tokens == first.stats.prompt_tokens - 1  # the last prompt token gives the first logits
    assert again.text == first.text


def test_a_system_prompt_change_keeps_only_the_tokens_before_it(llama):
    history, first = first_turn(llama, "system", "Be brief.")
    history += [{"role": "assistant", "content": first.text}, {"role": "user", "content": TURNS[1]}]
    changed = generate_reply(llama, history, GREEDY, threading.Event(), "Answer in French.", conversation="system")
    fresh = generate_reply(llama, history, GREEDY, threading.Event(), "Answer in French.")
    shared = common_length(prompt_ids(llama, history[:1], "Be brief."), prompt_ids(llama, history, "Answer in French."))
    assert changed.stats.cached_tokens == shared < first.stats.prompt_tokens
    assert changed.text == fresh.text


def test_a_clear_starts_over_from_the_template_start(llama):
    history, first = first_turn(llama, "clear")
    cleared = [{"role": "user", "content": TURNS[1]}]
    after = generate_reply(llama, cleared, GREEDY, threading.Event(), conversation="clear")
    shared = common_length(prompt_ids(llama, history), prompt_ids(llama, cleared))
    assert after.stats.cached_tokens == shared < first.stats.prompt_tokens // 2
    assert after.text == generate_reply(llama, cleared, GREEDY, threading.Event()).text


def test_another_model_or_precision_never_uses_a_kept_cache_and_the_first_keeps_its_own(tiny_models, llama):
    history, _ = first_turn(llama, "switch")
    other = load_model(str(tiny_models("llama", 3)), "bf16")
    assert generate_reply(other, history, GREEDY, threading.Event(), conversation="switch").stats.cached_tokens == 0
    back = generate_reply(llama, history, GREEDY, threading.Event(), conversation="switch")  # the pane switched back
    assert back.stats.cached_tokens > 0 and back.text == generate_reply(llama, history, GREEDY, threading.Event()).text


@pytest.mark.parametrize("arch", ["mistral", "gemma2"])
def test_a_conversation_past_the_sliding_window_keeps_reusing_its_cache_and_replies_as_a_fresh_prefill(tiny_models, arch,
                                                                                                       monkeypatch):
    """A 24-token window: the turns past it keep continuing their kept cache (a sliding
    layer attends to its window of a cache that holds every position), and every reply is
    the one a fresh prefill gives."""
    loaded, short = load_model(str(tiny_models(arch, 3, sliding_window=24)), "fp32"), GenerationSettings(temperature=0.0, max_new_tokens=3)
    replies = converse(loaded, "window", short)
    crossing = [r for r in replies[1:] if r.stats.prompt_tokens > 24]
    assert len(crossing) == 5 and all(r.stats.cached_tokens > 24 for r in crossing)
    monkeypatch.setenv(REUSE_ENV, "0")
    same_replies(replies, converse(loaded, "window-off", short))


def test_a_pane_reuses_its_own_cache_turn_by_turn_in_the_arena(tiny_models):
    session = ArenaSession()
    path = str(tiny_models("qwen2", 5))
    for pane in session.panes:
        pane.ref, pane.precision, pane.enabled = path, "fp32", pane.label != "Parent B"
    for message in TURNS[:3]:
        add_message(session, message)
        for _ in reply(session, GREEDY):
            pass
    merged, parent_a = session.pane("Merged"), session.pane("Parent A")
    assert merged.turns[0].cached_tokens == 0 and all(t.cached_tokens > 0 for t in merged.turns[1:] + parent_a.turns[1:])
    assert f"{merged.turns[2].cached_tokens} prompt tokens reused" in merged.status(reveal=True)
    assert "reused" not in merged.status(reveal=False)  # before a blind vote the stats tell nothing of speed
    # Both panes' conversations are kept by the model's own scheduler; another precision's decoder sees neither.
    kept = cache.MODELS.peek(path, "fp32").decoder.scheduler.kept
    assert {f"{session.name}/Merged", f"{session.name}/Parent A"} <= set(kept.conversations())
    other = load_model(path, "bf16").decoder.scheduler.kept
    assert not other.conversations() and other.take(f"{session.name}/Merged", [1, 2, 3]) is None


def layers(mb: int) -> list:
    one = torch.zeros(mb * 2**20 // 8, dtype=torch.float32)
    return [(one, one.clone())]


def test_idle_conversations_are_dropped_least_recently_used_beyond_the_budget():
    store = KeptCaches(budget=5 * 2**20)
    for name in ("a", "b"):
        store.keep(name, [1, 2, 3], layers(2))  # 2 MB each (keys and values of 1 MB)
    assert store.take("a", [1, 2, 3, 4]) is not None  # taken: it leaves the store until kept again
    assert store.take("a", [1, 2, 3, 4]) is None
    store.keep("a", [1, 2, 3, 4], layers(2))
    store.keep("c", [1], layers(2))
    assert store.conversations() == ["a", "c"] and store.nbytes() <= store.budget  # b, the least recently used, went


def test_a_model_that_leaves_the_cache_takes_its_kept_caches_along(tiny_models, monkeypatch):
    monkeypatch.setattr(scheduler, "IDLE_S", 0.05)  # its decode thread, which holds the scheduler, ends soon after
    loaded = load_model(str(tiny_models("llama", 1)), "fp32")
    converse(loaded, "leaving", GenerationSettings(temperature=0.0, max_new_tokens=2))
    store = weakref.ref(loaded.decoder.scheduler.kept)
    assert "leaving" in store().conversations()
    del loaded
    deadline = time.monotonic() + 10
    while store() is not None and time.monotonic() < deadline:
        gc.collect()
        time.sleep(0.05)
    assert store() is None


@pytest.mark.parametrize("heads, kv_heads, d, new, kept", [(9, 3, 64, 100, 1326), (9, 3, 64, 37, 5), (32, 8, 128, 20, 301),
                                                            (4, 4, 32, 17, 2)])
def test_a_prompt_attends_to_its_kept_cache_within_bf16_rounding(kernel_target, heads, kv_heads, d, new, kept):
    """The rest of a prompt against a kept cache holding bf16 values (as every kept cache
    does): with AVX512-BF16 the C kernel (csrc/kept_attention.c) gives every output within
    two bf16 roundings (the probabilities', the output's) of the float64 attention, the
    query tiles' last rows cut short (37, 20) and each row masked at its own position;
    without it, attend_kept declines and torch's float32 attention runs."""
    torch.manual_seed(new)
    keys, values = ((torch.randn(kv_heads, kept + new + 7, d) * 3).bfloat16().float() for _ in range(2))
    q = torch.randn(new, heads + 2 * kv_heads, d).bfloat16()[:, :heads]  # as the decoder slices it from q, k and v
    got = attend_kept(q, keys, values, kept, d**-0.5)
    if "avx512_bf16" not in cpu_flags() or kernel_target != "avx512":
        assert got is None
        return
    end, group = kept + new, heads // kv_heads
    k, v = (t[:, :end].double().repeat_interleave(group, 0) for t in (keys, values))
    scores = q.double().transpose(0, 1) @ k.transpose(1, 2) * d**-0.5
    scores.masked_fill_(torch.arange(end)[None] > torch.arange(kept, end)[:, None], float("-inf"))
    p = scores.softmax(-1)
    exact, magnitude = ((p @ t).transpose(0, 1).reshape(new, heads * d) for t in (v, v.abs()))
    assert got.dtype == torch.bfloat16 and got.shape == (new, heads * d)
    assert bool(((got.double() - exact).abs() <= (exact.abs() + magnitude) * 2**-8).all())
    assert float((got.double() - exact).norm() / exact.norm()) < 2**-8
