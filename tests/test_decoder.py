"""The lean decode loop (inference/decoder.py) against transformers' own forward and generate."""

import threading

import pytest
import torch

from inference import GenerationSettings, generate_reply, load_model
from inference.decoder import DECODER_ENV, PROMPT_ROWS, unsupported_reason
from testkit.tiny_models import lean_families

CONVERSATION = [{"role": "user", "content": "The capital of France is Paris. How are you?"}]


def replies_both_ways(loaded, settings: GenerationSettings, monkeypatch, conversation=CONVERSATION) -> tuple:
    lean = generate_reply(loaded, conversation, settings, threading.Event())
    monkeypatch.setenv(DECODER_ENV, "transformers")
    reference = generate_reply(loaded, conversation, settings, threading.Event())
    monkeypatch.delenv(DECODER_ENV)
    assert not lean.error and not reference.error
    return lean, reference


@pytest.mark.parametrize("arch", lean_families())  # qwen2: q/k/v biases; gemma2: norms after blocks, soft-caps, gelu
@pytest.mark.parametrize("settings", [
    GenerationSettings(temperature=0.0, max_new_tokens=24, repetition_penalty=1.0),
    GenerationSettings(temperature=0.0, max_new_tokens=24, min_new_tokens=24),  # eos masked: every reply runs 24 tokens
    GenerationSettings(temperature=0.9, top_p=0.9, top_k=40, max_new_tokens=24, seed=7),
], ids=["greedy", "penalty-min-tokens", "sampled"])
def test_lean_loop_picks_the_tokens_generate_picks(tiny_models, arch, settings, monkeypatch):
    """In fp32 both paths compute the same numbers, so every token must agree."""
    loaded = load_model(str(tiny_models(arch, 3)), "fp32")
    assert loaded.decoder is not None
    lean, reference = replies_both_ways(loaded, settings, monkeypatch)
    assert lean.text == reference.text and lean.stats.new_tokens == reference.stats.new_tokens
    if settings.min_new_tokens:
        assert lean.stats.new_tokens == 24


@pytest.mark.parametrize("arch", lean_families())
@pytest.mark.parametrize("precision", ["bf16", "int8", "fp8"])
def test_decode_logits_match_the_models_forward(tiny_models, math_path, arch, precision):
    """The torch loop's prefill equals the model's forward exactly (soft-capped attention:
    within 2%); each decode step (one cached token at a time) within 2% relative L2 of it:
    decode attention is float32 where transformers rounds via bf16. Where the C step runs,
    a short prompt goes through it as rows of one batch: those tokens decoded one at a time
    there, bit for bit, logits and cache. The sliding window (8 here) is shorter than the
    12 tokens, so the sliding layers of Mistral, Qwen2 and Gemma2 attend to their windows only."""
    loaded = load_model(str(tiny_models(arch, 5, sliding_window=8)), precision)
    decoder = loaded.decoder
    ids = torch.tensor([[1, 5, 9, 42, 77, 100, 3, 15, 60, 8, 200, 31]])
    prompt = 4
    with torch.inference_mode():
        full = loaded.model(ids).logits.float()[0]
        forward = loaded.model(ids[:, :prompt]).logits.float()[0, -1]
        if decoder.step is not None:
            decoder.prompt_rows = max(PROMPT_ROWS)
            stepped, together = decoder.new_cache(ids.shape[1]), decoder.new_cache(ids.shape[1])
            for position in range(prompt):
                alone = decoder.forward(ids[:, position:position + 1], position, stepped)
            logits = decoder.forward(ids[:, :prompt], 0, together)
            assert torch.equal(logits, alone)
            assert all(torch.equal(a[:, :prompt], b[:, :prompt]) for one, other in zip(stepped, together, strict=True)
                       for a, b in zip(one, other, strict=True))
            assert float((logits[0] - forward).norm() / forward.norm()) < 0.02
        decoder.prompt_rows = 0  # every prompt through the torch loop
        cache = decoder.new_cache(ids.shape[1])
        logits = decoder.forward(ids[:, :prompt], 0, cache)
        if decoder.softcap:  # float32 attention where transformers' eager attention rounds through bf16
            assert float((logits[0] - forward).norm() / forward.norm()) < 0.02
        else:
            assert torch.equal(logits[0], forward)  # same rows: same fp8 kernel
        for position in range(prompt, ids.shape[1]):
            logits = decoder.forward(ids[:, position:position + 1], position, cache)
            error = float((logits[0] - full[position]).norm() / full[position].norm())
            assert error < 0.02, (position, error)


@pytest.mark.parametrize("arch", lean_families())
def test_fp32_logits_are_the_models_forward_to_float_rounding(tiny_models, arch):
    """In fp32 nothing is rounded to bf16, so the loop's logits, prompt and each decoded
    token, are transformers' own to float rounding (1e-4): a misplaced norm, a missing
    soft-cap, a misread scaling or window moves them by percents. An 8-token window: the
    sliding layers of Mistral, Qwen2 and Gemma2 slide within the 12 tokens."""
    loaded = load_model(str(tiny_models(arch, 5, sliding_window=8)), "fp32")
    decoder = loaded.decoder
    ids = torch.tensor([[1, 5, 9, 42, 77, 100, 3, 15, 60, 8, 200, 31]])
    with torch.inference_mode():
        full = loaded.model(ids).logits.float()[0]
        cache = decoder.new_cache(ids.shape[1])
        steps = [decoder.forward(ids[:, :4], 0, cache)[0]]
        steps += [decoder.forward(ids[:, p:p + 1], p, cache)[0] for p in range(4, ids.shape[1])]
    errors = [float((logits - full[p]).norm() / full[p].norm()) for logits, p in zip(steps, range(3, ids.shape[1]), strict=True)]
    assert max(errors) < 1e-4, errors


def test_smollm2_int8_lean_reply_is_the_generate_reply(smollm2_dir, monkeypatch):
    """On the real model in int8, greedy: the first sentence is identical either way."""
    loaded = load_model("bundled:SmolLM2-135M-Instruct", "int8")
    lean, reference = replies_both_ways(loaded, GenerationSettings(temperature=0.0, max_new_tokens=20), monkeypatch,
                                        [{"role": "user", "content": "What is the capital of France?"}])
    assert "Paris" in lean.text and lean.text.split(".")[0] == reference.text.split(".")[0]


def test_what_the_lean_loop_does_not_run_goes_through_generate(tiny_models, monkeypatch):
    qwen3 = load_model(str(tiny_models("qwen3", 3)), "bf16")  # a family whose description does not say lean
    assert unsupported_reason(qwen3.model) == "architecture qwen3"
    reply = generate_reply(qwen3, CONVERSATION, GenerationSettings(temperature=0.0, max_new_tokens=8), threading.Event())
    assert not reply.error and reply.stats.new_tokens > 0
    llama = load_model(str(tiny_models("llama", 3)), "bf16")
    monkeypatch.setenv(DECODER_ENV, "transformers")
    assert llama.decoder is None


@pytest.mark.parametrize("arch", ["mistral", "gemma2"])  # every layer slides; every other layer does
def test_a_conversation_longer_than_the_window_stays_on_the_lean_loop_and_picks_what_generate_picks(tiny_models, arch,
                                                                                                   monkeypatch):
    """A 16-token window, far shorter than the prompt and reply: the sliding layers attend
    to their last 16 positions of a cache that keeps them all, as transformers masks them."""
    loaded = load_model(str(tiny_models(arch, 3, sliding_window=16)), "fp32")
    decoder = loaded.decoder
    assert 16 in [layer.window for layer in decoder.layers]
    calls = []
    lean_run = decoder.scheduler.run
    monkeypatch.setattr(decoder.scheduler, "run", lambda *args: calls.append(1) or lean_run(*args))
    settings = GenerationSettings(temperature=0.0, max_new_tokens=40, min_new_tokens=40)
    lean, reference = replies_both_ways(loaded, settings, monkeypatch)
    assert calls and lean.text == reference.text and lean.stats.new_tokens == 40
    assert lean.stats.prompt_tokens > 16


def test_fused_projections_add_no_memory(tiny_models):
    loaded = load_model(str(tiny_models("llama", 3)), "int8")
    before = loaded.report.weight_bytes
    assert loaded.decoder is not None
    from inference.quantize import stored_bytes

    assert stored_bytes(loaded.model) == before
    layer = loaded.model.model.layers[0]
    assert layer.self_attn.k_proj.weight.untyped_storage().data_ptr() == layer.self_attn.q_proj.weight.untyped_storage().data_ptr()


@pytest.mark.parametrize("arch", ["qwen2", "gemma2"])  # q/k/v biases; Gemma's norms, gelu, soft-capped scores, a window
@pytest.mark.parametrize("precision", ["bf16", "int8", "fp8"])
def test_the_c_step_computes_what_the_torch_step_computes(tiny_models, kernel_target, arch, precision, monkeypatch):
    """decode_step.c rounds where the torch loop rounds; only its sums run in another order.
    Over 40 cached positions (GQA, a 24-position window on the sliding layers) the logits
    stay within 1% and greedy picks the same token at every step (Gemma2: or one within 1%
    of it, a near tie: its soft-cap takes tanh, whose C and torch forms part by an ulp or two). The torch loop's linears
    run the same C products (as they do wherever the C step won), so what is compared is
    the step's own loops: norms, rotary, attention, soft-cap, activation."""
    from inference import cpu_kernels

    monkeypatch.setattr(cpu_kernels, "_choices", _CWins())
    loaded = load_model(str(tiny_models(arch, 5, sliding_window=24)), precision)
    decoder = loaded.decoder
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
            tie = 0.01 * float(reference.abs().max()) if decoder.softcap else 0.0  # a near tie only where tanh is taken
            assert error < 0.01 and float(c.max() - c[0, reference.argmax()]) <= tie, (position, error)


class _CWins(dict):
    """Measurements in which every C path won."""

    def get(self, key: tuple, default: object = None) -> object:
        return True


class _StepLoses(dict):
    """Measurements in which the C step lost to the torch loop (each product's as measured)."""

    def get(self, key: tuple, default: object = None) -> object:
        return False if key[0] == "step" else super().get(key, default)


def test_the_torch_loop_runs_where_the_c_step_measured_slower(tiny_models, monkeypatch):
    from inference import cpu_kernels

    monkeypatch.setattr(cpu_kernels, "_choices", _StepLoses())
    loaded = load_model(str(tiny_models("qwen2", 5)), "int8")
    assert loaded.decoder.step is None
    reply = generate_reply(loaded, CONVERSATION, GenerationSettings(temperature=0.0, max_new_tokens=8), threading.Event())
    assert not reply.error and reply.stats.new_tokens > 0
