"""The CUDA paths: FP8 through `torch._scaled_mm` (cc >= 8.9) and its weight-only fallback,
bitsandbytes int8, the in-memory t-preview, three panes streaming side by side, the SLERP
math on the GPU, and the footprint estimate behind the README's "What fits where".

Run with `pytest -m gpu` on a machine with an NVIDIA GPU. Without CUDA every test here is
skipped (one module-level skip): that is what `pytest -q` reports on the CPU machines.
Tolerances are those of the CPU suite (tests/test_inference.py): relative L2 error of the
logits against bf16 below 5% for int8 and 8% for fp8; SmolLM2 must still answer "Paris".
"""

import threading

import pytest
import torch
from helpers import streamed_together, tiny_yaml

from core.sources import read_config
from inference import GenerationSettings, generate_reply, load_model, stream_side_by_side
from inference.loading import estimate_footprint
from inference.quantize import FORCE_FALLBACK_ENV, Hardware
from merging import parse_config
from merging.merge import merge_in_memory
from merging.slerp import slerp
from testkit.reference import bf16_ulps, reference_slerp

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU suite: torch.cuda.is_available() is False (run it on CUDA)"),
]

CUDA = torch.device("cuda")
SMOLLM2 = "bundled:SmolLM2-135M-Instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
TOLERANCE = {"int8": 0.05, "fp8": 0.08}  # as in test_inference.test_quantized_logits_stay_close_to_bf16
IDS = torch.tensor([[1, 5, 9, 42, 77, 100, 3]])


def native_fp8() -> bool:
    return torch.cuda.get_device_capability(CUDA) >= (8, 9)


def greedy(max_new_tokens: int = 16, **kwargs) -> GenerationSettings:
    return GenerationSettings(temperature=0.0, max_new_tokens=max_new_tokens, **kwargs)


def logits(loaded) -> torch.Tensor:
    with torch.inference_mode():
        return loaded.model(IDS.to(CUDA)).logits.float().cpu()


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).norm() / reference.norm())


def answers_paris(loaded) -> str:
    reply = generate_reply(loaded, QUESTION, greedy(), threading.Event())
    assert not reply.error, reply.error
    assert "Paris" in reply.text, reply.text
    return reply.text


def check_precision(tiny_models, precision: str, backend: str) -> None:
    """Logits of tiny models (untied llama; qwen2 with tied embeddings) against bf16 on the
    GPU, within the CPU suite's tolerance; then SmolLM2's greedy answer."""
    for arch in ("llama", "qwen2"):
        folder = str(tiny_models(arch, 7))
        reference = logits(load_model(folder, "bf16", CUDA))
        quantized = load_model(folder, precision, CUDA)
        assert quantized.report.device == str(CUDA) and backend in quantized.report.backend
        error = relative_error(logits(quantized), reference)
        assert 0 < error < TOLERANCE[precision], (arch, error)
    answers_paris(load_model(SMOLLM2, precision, CUDA))


def test_fp8_runs_natively_through_scaled_mm_on_cc_8_9_and_up(tiny_models):
    if not native_fp8():
        pytest.skip(f"compute capability {torch.cuda.get_device_capability(CUDA)} has no native FP8 (needs 8.9)")
    check_precision(tiny_models, "fp8", "torch._scaled_mm, per-")


def test_fp8_falls_back_to_weight_only_decode_below_cc_8_9(tiny_models, monkeypatch):
    """The path A100 / A10G / T4 take; forced on any GPU through the documented switch."""
    monkeypatch.setenv(FORCE_FALLBACK_ENV, "1")
    check_precision(tiny_models, "fp8", "fp8 weight-only, cast to the compute dtype per matmul (CUDA")


def test_int8_goes_through_bitsandbytes(tiny_models):
    check_precision(tiny_models, "int8", "bitsandbytes LLM.int8 on cuda")


@pytest.mark.parametrize("precision", ["bf16", "int8", "fp8"])
def test_the_footprint_estimate_matches_a_cuda_load(precision):
    """What the README's table is computed from, against what a CUDA load keeps (bitsandbytes'
    storage is estimated with the int8 stand-in: within 2%)."""
    loaded = load_model(SMOLLM2, precision, CUDA)
    estimate = estimate_footprint(read_config(SMOLLM2), precision, Hardware.of(CUDA))
    assert estimate.precision == loaded.report.precision
    assert abs(estimate.resident_bytes - loaded.report.weight_bytes) <= 0.02 * loaded.report.weight_bytes


@pytest.mark.usefixtures("isolated_app")
def test_the_t_preview_re_merges_in_memory_and_runs_on_the_gpu(tiny_models):
    from arena import chat_session
    from inference import cache
    from ui import merge_tab, t_preview

    a, b = str(tiny_models("llama", 1)), str(tiny_models("llama", 2))
    output = merge_tab.merge(tiny_yaml(a, b), "merged", False, merge_tab.MergeSession(), progress=lambda *x, **k: None)[2]
    state = chat_session.ChatSession()
    name, message = t_preview.preview_t("0", "0", "0", output, "auto", state)  # t = 0: parent A's weights
    preview = cache.MODELS.get(name, "auto")
    assert "Re-merged in memory" in message and preview.report.device == str(CUDA)
    # auto on CUDA: fp8 where native; else bf16 (bitsandbytes int8 only quantizes at load from disk).
    assert preview.report.precision == ("fp8" if native_fp8() else "bf16")
    error = relative_error(logits(preview), logits(load_model(a, "bf16", CUDA)))
    assert error < (TOLERANCE["fp8"] if native_fp8() else 1e-3)

    smol = merge_tab.merge(tiny_yaml(SMOLLM2, SMOLLM2), "smol", False, merge_tab.MergeSession(), progress=lambda *x, **k: None)[2]
    name, _ = t_preview.preview_t("0.5", "0.5", "0.5", smol, "auto", state)
    answers_paris(cache.MODELS.get(name, "auto"))


def test_three_panes_stream_side_by_side_on_the_gpu():
    panes = [load_model(SMOLLM2, precision, CUDA) for precision in ("auto", "bf16", "int8")]
    for pane in panes:  # warm up: the first generate on a GPU compiles and allocates
        generate_reply(pane, QUESTION, greedy(2), threading.Event())
    together, snapshot = streamed_together(stream_side_by_side(panes, [QUESTION] * 3, greedy(96, min_new_tokens=96)))
    assert together  # every pane had text before any pane finished
    for reply in snapshot:
        assert not reply.error and reply.stats.new_tokens == 96 and "Paris" in reply.text, reply


def test_slerp_on_the_gpu_equals_the_cpu_merge_within_one_bf16_ulp(tiny_models):
    """The whole merge (vocab 40000 x 32: the embedding spans two chunks, so the streamed
    two-pass path runs too) and a 4096x4096 pair, against the CPU and mergekit's formula."""
    a, b = tiny_models("llama", 1, vocab_size=40000), tiny_models("llama", 2, vocab_size=40000)
    config = parse_config(tiny_yaml(a, b, "[0, 0.3, 0.7, 1]"))
    on_cpu, on_gpu = merge_in_memory(config, 10**9), merge_in_memory(config, 10**9, device=str(CUDA))
    assert on_cpu.keys() == on_gpu.keys()
    identical = 0
    for name, tensor in on_cpu.items():
        assert on_gpu[name].device.type == "cpu" and on_gpu[name].dtype == tensor.dtype
        assert bf16_ulps(on_gpu[name], tensor, float(tensor.float().abs().max())) <= 1.0, name
        identical += torch.equal(on_gpu[name], tensor)
    print(f"{identical} of {len(on_cpu)} merged tensors bit-identical between CPU and GPU")

    g = torch.Generator().manual_seed(0)
    v0, v1 = torch.randn(4096, 4096, generator=g).bfloat16(), torch.randn(4096, 4096, generator=g).bfloat16()
    scale = float(torch.cat([v0, v1]).float().abs().max())
    for t in (0.0, 0.3, 0.5, 1.0):
        gpu = slerp(t, v0.to(CUDA), v1.to(CUDA)).bfloat16().cpu()
        assert bf16_ulps(gpu, slerp(t, v0, v1).bfloat16(), scale) <= 1.0
        mergekit = torch.from_numpy(reference_slerp(t, v0.float().numpy(), v1.float().numpy()))
        assert bf16_ulps(gpu, mergekit, scale) <= 1.0
    assert torch.equal(slerp(0.0, v0.to(CUDA), v1.to(CUDA)).bfloat16().cpu(), v0)  # t = 0 is the base, bit-exact
