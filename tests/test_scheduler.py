"""Continuous batching (inference/scheduler.py): replies of one model, from many threads,
share its decode steps; each is the reply it would have been alone."""

import itertools
import threading
import time

import pytest
import torch

from inference import GenerationSettings, ModelCache, generate_reply, load_model
from inference import scheduler as scheduler_module
from inference.decoder import PROMPT_ROWS
from testkit.tiny_models import lean_families

PROMPTS = [[{"role": "user", "content": text}] for text in (
    "The capital of France is Paris. How are you?", "Count from one to ten.", "Name three colours.",
    "What is two plus two?", "Tell me a story about a cat who learned to swim in the sea.")]


def together(loaded, histories, settings_of, stops=None) -> list:
    """Each history's reply, all started at once from their own threads."""
    replies = [None] * len(histories)
    stops = stops or [threading.Event() for _ in histories]

    def one(i: int) -> None:
        replies[i] = generate_reply(loaded, histories[i], settings_of(i), stops[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(histories))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return replies


def batch_sizes(decoder, monkeypatch, pause_s: float = 0.0) -> list[int]:
    """The number of replies in each decode step from now on (each step `pause_s` longer:
    a tiny model's steps, slowed to a real model's pace)."""
    sizes, real = [], decoder.forward_batch
    monkeypatch.setattr(decoder, "forward_batch", lambda tokens, *rest: sizes.append(len(tokens)) or time.sleep(pause_s) or real(
        tokens, *rest))
    return sizes


@pytest.mark.parametrize("arch", lean_families())  # qwen2: q/k/v biases; gemma2: its norms, gelu, soft-caps, windows
@pytest.mark.parametrize("precision", ["bf16", "int8", "fp8"])
def test_greedy_replies_decoded_together_are_the_replies_decoded_alone(tiny_models, kernel_target, arch, precision, monkeypatch):
    """Five replies of different lengths (each joins and leaves the batch at its own step),
    token for token what each gives alone, through the C step's batch."""
    loaded = load_model(str(tiny_models(arch, 3)), precision)
    decoder = loaded.decoder
    assert decoder.step is not None  # the C step runs, alone and in the batch

    def settings(i: int) -> GenerationSettings:
        return GenerationSettings(temperature=0.0, max_new_tokens=12 + 4 * i, min_new_tokens=12 + 4 * i)

    alone = [generate_reply(loaded, history, settings(i), threading.Event()) for i, history in enumerate(PROMPTS)]
    sizes = batch_sizes(decoder, monkeypatch)
    prompts, prefill = [], decoder.prefill
    monkeypatch.setattr(decoder, "prefill", lambda parts, *rest: prompts.append(len(parts)) or prefill(parts, *rest))
    batched = together(loaded, PROMPTS, settings)
    assert max(sizes) >= 3  # they really shared steps
    assert max(prompts) >= 2  # and prompts that arrived together, a prefill
    for one, other in zip(alone, batched, strict=True):
        assert not other.error and other.stats.new_tokens == one.stats.new_tokens
        assert other.text == one.text


@pytest.mark.parametrize("prompt_rows", [0, max(PROMPT_ROWS)], ids=["torch-loop", "c-step"])
@pytest.mark.parametrize("precision", ["bf16", "int8", "fp8"])
def test_prompts_prefilled_together_give_each_the_logits_and_cache_it_gets_alone(tiny_models, math_path, precision, prompt_rows):
    """Prompts of 5, 20 and 40 tokens in one prefill: each prompt's logits and cache are
    bit for bit its own prefill's, through the torch loop's products or as rows of the C
    step (where it runs). Alone, a 20-token prompt and a 40-token one take different
    products (decode-sized, widened GEMM); their 65 rows together took the widened GEMM for
    all, and a near tie in a reply went the other way on AVX-512."""
    decoder = load_model(str(tiny_models("llama", 3)), precision).decoder
    decoder.prompt_rows = prompt_rows
    prompts = [torch.randint(0, 200, (1, n), generator=torch.Generator().manual_seed(n)) for n in (5, 20, 40)]
    alone = [(decoder.prefill([(ids, 0, cache)])[0], cache) for ids, cache in ((ids, decoder.new_cache(64)) for ids in prompts)]
    caches = [decoder.new_cache(64) for _ in prompts]
    together = decoder.prefill([(ids, 0, cache) for ids, cache in zip(prompts, caches, strict=True)])
    for (logits, cache), other_logits, other_cache, ids in zip(alone, together, caches, prompts, strict=True):
        assert torch.equal(logits, other_logits), ids.shape
        n = ids.shape[1]
        assert all(torch.equal(a[:, :n], b[:, :n]) for layer, other in zip(cache, other_cache, strict=True)
                   for a, b in zip(layer, other, strict=True))


def test_sampled_replies_keep_their_own_seed_and_penalty_in_a_batch(tiny_models, kernel_target, monkeypatch):
    """Sampling, seed and repetition penalty are each reply's own: the same seed gives the
    same reply beside others, another seed another reply."""
    loaded = load_model(str(tiny_models("qwen2", 5)), "int8")
    sizes = batch_sizes(loaded.decoder, monkeypatch)

    def settings(i: int) -> GenerationSettings:
        return GenerationSettings(temperature=1.0, top_p=0.95, max_new_tokens=16, min_new_tokens=16, seed=i % 2,
                                  repetition_penalty=1.0 + 0.3 * (i % 2))

    alone = [generate_reply(loaded, PROMPTS[0], settings(i), threading.Event()).text for i in range(4)]
    batched = [r.text for r in together(loaded, [PROMPTS[0]] * 4, settings)]
    assert batched == alone and alone[0] == alone[2] and alone[0] != alone[1]
    assert max(sizes) >= 2


def test_a_reply_joins_a_running_batch_and_a_stop_ends_only_its_own(tiny_models, kernel_target, monkeypatch):
    """A reply sent while another streams joins it at the next step (it does not wait for
    the first to end); Stop ends the stopped reply only."""
    loaded = load_model(str(tiny_models("llama", 3)), "bf16")
    sizes = batch_sizes(loaded.decoder, monkeypatch, pause_s=0.005)
    long = GenerationSettings(temperature=0.0, max_new_tokens=150, min_new_tokens=150)
    stops = [threading.Event(), threading.Event()]
    replies = [None, None]
    texts = [[], []]

    def one(i: int) -> None:
        replies[i] = generate_reply(loaded, PROMPTS[i], long, stops[i], on_text=texts[i].append)

    first = threading.Thread(target=one, args=(0,))
    first.start()
    while not texts[0]:
        time.sleep(0.01)
    second = threading.Thread(target=one, args=(1,))
    second.start()
    while not texts[1]:
        time.sleep(0.01)
    stops[0].set()
    first.join()
    assert replies[0].stopped and replies[0].stats.new_tokens < 150
    assert second.is_alive()  # the other reply goes on
    second.join()
    assert replies[1].stats.new_tokens == 150 and not replies[1].stopped
    assert 2 in sizes
    assert replies[1].text == generate_reply(loaded, PROMPTS[1], long, threading.Event()).text


def test_a_short_prompt_and_the_streaming_replies_next_tokens_go_through_one_pass(tiny_models, kernel_target, monkeypatch):
    """A new turn's short prompt, sent while two replies stream, goes through the C step in
    the same pass as their next tokens (one read of the weights for both, as llama.cpp's
    server batches them); each reply, the new one and the streaming ones, is the one it
    gets alone."""
    loaded = load_model(str(tiny_models("llama", 3)), "int8")
    decoder = loaded.decoder
    assert decoder.prompt_in_c(20)
    passes, prefill = [], decoder.prefill
    monkeypatch.setattr(decoder, "prefill", lambda parts, *rest: passes.append(sorted(ids.shape[1] for ids, _, _ in parts)) or prefill(
        parts, *rest))
    batch_sizes(decoder, monkeypatch, pause_s=0.005)  # a real model's pace: the replies still stream when the prompt comes
    long = GenerationSettings(temperature=0.0, max_new_tokens=120, min_new_tokens=120)
    short = GenerationSettings(temperature=0.0, max_new_tokens=8, min_new_tokens=8)
    replies, texts = [None, None, None], [[], []]

    def streaming(i: int) -> None:
        replies[i] = generate_reply(loaded, PROMPTS[i], long, threading.Event(), on_text=texts[i].append)

    threads = [threading.Thread(target=streaming, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    while not (texts[0] and texts[1]):
        time.sleep(0.01)
    start = len(passes)
    replies[2] = generate_reply(loaded, PROMPTS[2], short, threading.Event())
    for thread in threads:
        thread.join()
    assert any(lengths[:2] == [1, 1] and lengths[2] > 1 for lengths in passes[start:]), passes[start:]  # two tokens rode along
    alone = [generate_reply(loaded, PROMPTS[i], settings, threading.Event()) for i, settings in ((0, long), (1, long), (2, short))]
    assert [r.text for r in replies] == [r.text for r in alone]


def test_a_long_prompt_is_prefilled_in_chunks_between_the_steps_of_a_streaming_reply(tiny_models, kernel_target, monkeypatch):
    """A new turn's prompt comes in chunks, and a reply already streaming gets a step
    between two chunks; the long prompt's reply is the one it gets alone."""
    monkeypatch.setattr(scheduler_module, "PREFILL_CHUNK", 8)
    loaded = load_model(str(tiny_models("qwen2", 3)), "bf16")
    decoder = loaded.decoder
    log, prefill = [], decoder.prefill
    monkeypatch.setattr(decoder, "prefill", lambda parts, *rest: log.append(
        ("prefill", sum(ids.shape[1] for ids, _, _ in parts))) or prefill(parts, *rest))
    sizes = batch_sizes(decoder, monkeypatch)
    real_batch = decoder.forward_batch
    monkeypatch.setattr(decoder, "forward_batch", lambda tokens, *rest: log.append(("step", len(tokens))) or real_batch(tokens, *rest))
    settings = GenerationSettings(temperature=0.0, max_new_tokens=60, min_new_tokens=60)
    long_history = [{"role": "user", "content": " ".join(["a long message about the sea"] * 12)}]
    texts: list[str] = []
    streaming = threading.Thread(target=lambda: generate_reply(loaded, PROMPTS[1], settings, threading.Event(), on_text=texts.append))
    streaming.start()
    while not texts:
        time.sleep(0.01)
    start = len(log)
    reply = generate_reply(loaded, long_history, GenerationSettings(temperature=0.0, max_new_tokens=8, min_new_tokens=8),
                           threading.Event())
    streaming.join()
    chunks = [i for i, (kind, n) in enumerate(log[start:]) if kind == "prefill" and n > 1]
    assert len(chunks) >= 4 and all(log[start + i][1] <= 8 for i in chunks)
    assert all(any(kind == "step" for kind, _ in log[start + a:start + b]) for a, b in itertools.pairwise(chunks))
    assert sizes
    monkeypatch.setattr(scheduler_module, "PREFILL_CHUNK", 4096)
    alone = generate_reply(loaded, long_history, GenerationSettings(temperature=0.0, max_new_tokens=8, min_new_tokens=8),
                           threading.Event())
    assert reply.text == alone.text


def test_a_chunked_prompt_keeps_its_place_so_another_models_prompt_waits_for_its_last_chunk(tiny_models, kernel_target, monkeypatch):
    """Prompts of different models go one at a time in the order they came (inference/
    sharing.py), also when one comes in chunks: the first pane's first token comes after
    its own prompt, not after a share of every pane's."""
    monkeypatch.setattr(scheduler_module, "PREFILL_CHUNK", 8)
    models = ModelCache()  # as the app's: its models share the process's cores
    first, second = (models.get(str(tiny_models("qwen2", seed)), "bf16") for seed in (3, 4))
    log = []
    for name, loaded in (("first", first), ("second", second)):
        decoder = loaded.decoder
        real = decoder.prefill
        monkeypatch.setattr(decoder, "prefill", lambda parts, *rest, name=name, real=real: log.append(
            (name, sum(ids.shape[1] for ids, _, _ in parts))) or time.sleep(0.05) or real(parts, *rest))
    batch_sizes(first.decoder, monkeypatch, pause_s=0.02)  # a real model's pace: it streams while the prompt comes
    settings = GenerationSettings(temperature=0.0, max_new_tokens=150, min_new_tokens=150)
    texts: list[str] = []
    streaming = threading.Thread(target=lambda: generate_reply(first, PROMPTS[1], settings, threading.Event(), on_text=texts.append))
    streaming.start()  # the first model streams, so its next prompt comes in chunks
    while not texts:
        time.sleep(0.01)
    start = len(log)
    long_history = [{"role": "user", "content": " ".join(["a long message about the sea"] * 12)}]
    short = GenerationSettings(temperature=0.0, max_new_tokens=4)
    chunked = threading.Thread(target=lambda: generate_reply(first, long_history, short, threading.Event()))
    chunked.start()
    deadline = time.monotonic() + 30
    while len(log) < start + 2 and time.monotonic() < deadline:  # two chunks in
        time.sleep(0.005)
    other = generate_reply(second, PROMPTS[2], short, threading.Event())
    chunked.join()
    streaming.join()
    names = [name for name, _ in log[start:]]
    assert not other.error and names.count("first") >= 5, log[start:]
    assert names.index("second") > max(i for i, name in enumerate(names) if name == "first"), names
