"""The GPU code paths, run on the CPU in the normal suite: native FP8 through
`torch._scaled_mm` (per-row scales, and the per-tensor layout a device that refuses them
gets), the weight-only fallback when the device refuses both, and bitsandbytes int8.
Each is forced where the CPU would not choose it, and bounded against bf16 as the CPU
paths are (tests/test_inference.py). `pytest -m gpu` (tests/test_gpu.py) runs them on
real devices."""

from __future__ import annotations

import threading

import pytest
import torch

from inference import GenerationSettings, generate_reply, load_model
from inference.cpu_kernels import fp8_linear_cpu
from inference.quantize import AT_FIRST_USE, FP8Linear, Hardware, probe_fp8

CPU = torch.device("cpu")
IDS = torch.tensor([[1, 5, 9, 42, 77, 100, 3]])
TOLERANCE = {"int8": 0.05, "fp8": 0.08}  # as test_inference.test_quantized_logits_stay_close_to_bf16
REAL_SCALED_MM = torch._scaled_mm


def relative_error(loaded, reference) -> float:
    with torch.inference_mode():
        ours = loaded.model(IDS).logits.float()
    return float((ours - reference).norm() / reference.norm())


def bf16_logits(folder: str) -> torch.Tensor:
    with torch.inference_mode():
        return load_model(folder, "bf16", CPU).model(IDS).logits.float()


def replies(loaded) -> str:
    reply = generate_reply(loaded, [{"role": "user", "content": "hello"}], GenerationSettings(temperature=0.0, max_new_tokens=6),
                           threading.Event())
    assert not reply.error and reply.stats.new_tokens > 0, reply.error
    return reply.text


@pytest.fixture
def device_refusing(monkeypatch):
    """Make torch._scaled_mm refuse some layouts, as a device's cuBLAS does, and probe afresh."""
    def refuse(*layouts: str) -> None:
        def scaled_mm(a, b, *, scale_a, scale_b, **kwargs):
            layout = "row" if scale_a.numel() > 1 else "tensor"
            if layout in layouts:
                raise RuntimeError("CUDA error: CUBLAS_STATUS_NOT_SUPPORTED when calling cublasLtMatmul")
            return REAL_SCALED_MM(a, b, scale_a=scale_a, scale_b=scale_b, **kwargs)
        monkeypatch.setattr(torch, "_scaled_mm", scaled_mm)
        probe_fp8.cache_clear()
    yield refuse
    probe_fp8.cache_clear()


def native_fp8_load(folder: str) -> object:
    return load_model(folder, "fp8", CPU, hardware=Hardware.of(CPU, try_native_fp8=True))


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_native_fp8_with_row_scales_runs_on_the_cpu_within_the_fp8_bound(tiny_models, arch, device_refusing):
    device_refusing()  # nothing refused: the probe runs the real torch._scaled_mm here
    folder = str(tiny_models(arch, 7))
    loaded = native_fp8_load(folder)
    assert "torch._scaled_mm, per-row scales (native FP8)" in loaded.report.backend
    assert any(isinstance(m, FP8Linear) and m.scaling == "row" for m in loaded.model.modules())
    assert 0 < relative_error(loaded, bf16_logits(folder)) < TOLERANCE["fp8"]
    replies(loaded)


def test_a_device_refusing_row_scales_chats_in_fp8_with_tensor_scales_and_says_so(tiny_models, device_refusing):
    device_refusing("row")
    folder = str(tiny_models("llama", 7))
    loaded = native_fp8_load(folder)
    assert ("torch._scaled_mm, per-tensor scales (native FP8) (this device refused per-row scales (RuntimeError: CUDA error: "
            "CUBLAS_STATUS_NOT_SUPPORTED") in loaded.report.backend
    assert 0 < relative_error(loaded, bf16_logits(folder)) < TOLERANCE["fp8"]
    replies(loaded)


def test_a_device_refusing_native_fp8_falls_back_to_weight_only_and_says_so(tiny_models, device_refusing):
    device_refusing("row", "tensor")
    folder = str(tiny_models("llama", 7))
    loaded = native_fp8_load(folder)
    assert f"{fp8_linear_cpu.backend} (native FP8 refused by this device: per-row scales" in loaded.report.backend
    assert "per-tensor scales (RuntimeError" in loaded.report.backend
    assert not any(isinstance(m, FP8Linear) and m.native for m in loaded.model.modules())
    assert 0 < relative_error(loaded, bf16_logits(folder)) < TOLERANCE["fp8"]
    replies(loaded)


def test_on_zerogpu_the_layout_is_probed_where_the_layers_first_run(tiny_models, device_refusing, monkeypatch):
    """ZeroGPU loads the model where CUDA is emulated (a probe there would run on the CPU):
    the layers probe the device they first run on, the GPU worker's, and answer exactly as a
    model loaded with that layout does."""
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert Hardware.of(CPU, try_native_fp8=True) == Hardware(cuda=True, native_fp8=True, fp8_scaling=AT_FIRST_USE)
    monkeypatch.delenv("SPACES_ZERO_GPU")
    device_refusing("row")
    folder = str(tiny_models("llama", 7))
    lazy = load_model(folder, "fp8", CPU, hardware=Hardware(cuda=False, native_fp8=True, fp8_scaling=AT_FIRST_USE))
    assert "probe on the GPU finds at the first reply" in lazy.report.backend and probe_fp8.cache_info().currsize == 0
    with torch.inference_mode():
        probed = lazy.model(IDS).logits
    assert probe_fp8.cache_info().currsize == 1 and probe_fp8("cpu")[0] == "tensor"
    with torch.inference_mode():
        assert torch.equal(probed, native_fp8_load(folder).model(IDS).logits)  # the per-tensor layout, as probed at load
    replies(lazy)


def test_the_probe_refuses_a_layout_that_runs_but_answers_wrongly(monkeypatch):
    """A device may run a layout and return garbage: the probe checks the numbers too."""
    def zeros_for_rows(a, b, *, scale_a, scale_b, out_dtype, **kwargs):
        y = REAL_SCALED_MM(a, b, scale_a=scale_a, scale_b=scale_b, out_dtype=out_dtype, **kwargs)
        return torch.zeros_like(y) if scale_a.numel() > 1 else y
    monkeypatch.setattr(torch, "_scaled_mm", zeros_for_rows)
    probe_fp8.cache_clear()
    try:
        scaling, note = probe_fp8("cpu")
    finally:
        probe_fp8.cache_clear()
    assert scaling == "tensor" and note == "this device refused per-row scales (a wrong result, 100% off)"


def test_bitsandbytes_int8_runs_on_the_cpu_within_the_int8_bound(tiny_models):
    from bitsandbytes.nn import Linear8bitLt

    folder = str(tiny_models("llama", 7))
    loaded = load_model(folder, "int8", CPU, hardware=Hardware(cuda=True, native_fp8=False))
    assert loaded.report.backend == "bitsandbytes LLM.int8 on cpu"
    assert sum(isinstance(m, Linear8bitLt) for m in loaded.model.modules()) == 4 * 7  # q k v o gate up down per layer
    assert 0 < relative_error(loaded, bf16_logits(folder)) < TOLERANCE["int8"]
    replies(loaded)
