"""The lean decode loop (inference/decoder.py) against transformers' own forward and generate."""

import threading

import pytest
import torch

from inference import GenerationSettings, build_prompt, generate_reply, load_model
from inference.decoder import DECODER_ENV, lean_decoder, unsupported_reason

CONVERSATION = [{"role": "user", "content": "The capital of France is Paris. How are you?"}]


def replies_both_ways(loaded, settings: GenerationSettings, monkeypatch, conversation=CONVERSATION) -> tuple:
    lean = generate_reply(loaded, conversation, settings, threading.Event())
    monkeypatch.setenv(DECODER_ENV, "transformers")
    reference = generate_reply(loaded, conversation, settings, threading.Event())
    monkeypatch.delenv(DECODER_ENV)
    assert not lean.error and not reference.error
    return lean, reference


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])  # qwen2: q/k/v biases and a tied lm_head
@pytest.mark.parametrize("settings", [
    GenerationSettings(temperature=0.0, max_new_tokens=24, repetition_penalty=1.0),
    GenerationSettings(temperature=0.0, max_new_tokens=24, min_new_tokens=24),  # eos masked: every reply runs 24 tokens
    GenerationSettings(temperature=0.9, top_p=0.9, top_k=40, max_new_tokens=24, seed=7),
], ids=["greedy", "penalty-min-tokens", "sampled"])
def test_lean_loop_picks_the_tokens_generate_picks(tiny_models, arch, settings, monkeypatch):
    """In fp32 both paths compute the same numbers, so every token must agree."""
    loaded = load_model(str(tiny_models(arch, 3)), "fp32")
    assert lean_decoder(loaded.model) is not None
    lean, reference = replies_both_ways(loaded, settings, monkeypatch)
    assert lean.text == reference.text and lean.stats.new_tokens == reference.stats.new_tokens
    if settings.min_new_tokens:
        assert lean.stats.new_tokens == 24


@pytest.mark.parametrize("precision", ["bf16", "int8", "fp8"])
def test_decode_logits_match_the_models_forward(tiny_models, math_path, precision):
    """Prefill equals the model's forward exactly; each decode step (one cached token at a
    time) within 2% relative L2 of it: decode attention is float32 where SDPA rounds via bf16."""
    loaded = load_model(str(tiny_models("qwen2", 5)), precision)
    decoder = lean_decoder(loaded.model)
    ids = torch.tensor([[1, 5, 9, 42, 77, 100, 3, 15, 60, 8, 200, 31]])
    prompt = 4
    with torch.inference_mode():
        full = loaded.model(ids).logits.float()[0]
        cache = decoder.new_cache(ids.shape[1])
        logits = decoder.forward(ids[:, :prompt], 0, cache)
        assert torch.equal(logits[0], loaded.model(ids[:, :prompt]).logits.float()[0, -1])  # same rows: same fp8 kernel
        for position in range(prompt, ids.shape[1]):
            logits = decoder.forward(ids[:, position:position + 1], position, cache)
            error = float((logits[0] - full[position]).norm() / full[position].norm())
            assert error < 0.02, (position, error)


def test_smollm2_int8_lean_reply_is_the_generate_reply(smollm2_dir, monkeypatch):
    """On the real model in int8, greedy: the first sentence is identical either way."""
    loaded = load_model("bundled:SmolLM2-135M-Instruct", "int8")
    lean, reference = replies_both_ways(loaded, GenerationSettings(temperature=0.0, max_new_tokens=20), monkeypatch,
                                        [{"role": "user", "content": "What is the capital of France?"}])
    assert "Paris" in lean.text and lean.text.split(".")[0] == reference.text.split(".")[0]


def test_what_the_lean_loop_does_not_run_goes_through_generate(tiny_models, monkeypatch):
    gemma = load_model(str(tiny_models("gemma2", 3)), "bf16")
    assert unsupported_reason(gemma.model) == "architecture gemma2"
    reply = generate_reply(gemma, CONVERSATION, GenerationSettings(temperature=0.0, max_new_tokens=8), threading.Event())
    assert not reply.error and reply.stats.new_tokens > 0
    llama = load_model(str(tiny_models("llama", 3)), "bf16")
    monkeypatch.setenv(DECODER_ENV, "transformers")
    assert lean_decoder(llama.model) is None


def test_a_conversation_longer_than_the_window_goes_through_generate(tiny_models, monkeypatch):
    """The tiny Mistral's sliding window is 64 tokens: a reply that would cross it is left
    to transformers, which applies the window; a shorter one runs in the lean loop."""
    loaded = load_model(str(tiny_models("mistral", 3)), "fp32")
    decoder = lean_decoder(loaded.model)
    assert decoder.window == 64
    calls = []
    lean_run = decoder.scheduler.run
    monkeypatch.setattr(decoder.scheduler, "run", lambda *args: calls.append(1) or lean_run(*args))
    prompt_length = len(build_prompt(loaded.tokenizer, CONVERSATION).input_ids)
    for max_new_tokens, lean in [(64 - prompt_length, True), (65 - prompt_length, False)]:
        calls.clear()
        settings = GenerationSettings(temperature=0.0, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens)
        reply = generate_reply(loaded, CONVERSATION, settings, threading.Event())
        assert not reply.error and reply.stats.new_tokens == max_new_tokens
        assert bool(calls) == lean, max_new_tokens


def test_fused_projections_add_no_memory(tiny_models):
    loaded = load_model(str(tiny_models("llama", 3)), "int8")
    before = loaded.report.weight_bytes
    lean_decoder(loaded.model)
    from inference.quantize import stored_bytes

    assert stored_bytes(loaded.model) == before
    layer = loaded.model.model.layers[0]
    assert layer.self_attn.k_proj.weight.untyped_storage().data_ptr() == layer.self_attn.q_proj.weight.untyped_storage().data_ptr()


@pytest.mark.parametrize("precision", ["bf16", "int8", "fp8"])
def test_the_c_step_computes_what_the_torch_step_computes(tiny_models, kernel_target, precision):
    """decode_step.c rounds where the torch loop rounds; only its sums run in another order.
    Over 40 cached positions (GQA, q/k/v biases) the logits stay within 1% and greedy picks
    the same token at every step."""
    loaded = load_model(str(tiny_models("qwen2", 5)), precision)
    decoder = lean_decoder(loaded.model)
    assert decoder.step is not None  # a bf16 model and a C compiler: the C step runs
    ids = torch.randint(3, loaded.model.config.vocab_size, (1, 48), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        in_c, in_torch = decoder.new_cache(48), decoder.new_cache(48)
        in_torch.bound = None
        for cache in (in_c, in_torch):
            decoder.forward(ids[:, :8], 0, cache)
        for position in range(8, 48):
            token = ids[:, position:position + 1]
            c, reference = decoder.forward(token, position, in_c), decoder.forward(token, position, in_torch)
            error = float((c - reference).norm() / reference.norm())
            assert error < 0.01 and c.argmax() == reference.argmax(), (position, error)


class _StepLoses(dict):
    """Measurements in which the C step lost to the torch loop (each product's as measured)."""

    def get(self, key: tuple, default: object = None) -> object:
        return False if key[0] == "step" else super().get(key, default)


def test_the_torch_loop_runs_where_the_c_step_measured_slower(tiny_models, monkeypatch):
    from inference import cpu_kernels

    monkeypatch.setattr(cpu_kernels, "_choices", _StepLoses())
    loaded = load_model(str(tiny_models("qwen2", 5)), "int8")
    assert lean_decoder(loaded.model).step is None
    reply = generate_reply(loaded, CONVERSATION, GenerationSettings(temperature=0.0, max_new_tokens=8), threading.Event())
    assert not reply.error and reply.stats.new_tokens > 0
