"""Weight quantization of a loaded model's linear layers: int8 and FP8 (e4m3).

Both keep one scale per output channel. Every linear is quantized, lm_head included,
because a bf16 lm_head is a large share of a small model's token (Qwen2.5-0.5B: 28% of
the parameters). The embedding lookup stays exact in the model dtype; a tied lm_head
gets its own quantized copy. The lm_head is int8 in FP8 models too, because e4m3's 3
mantissa bits on the output projection turned SmolLM2's greedy "Paris" into nonsense.
On CUDA an FP8 model keeps a bf16 lm_head.

Backends, chosen by the hardware:
- int8 on CPU: a C kernel for decode and `torch._weight_int8pack_mm` for prefill
  (cpu_kernels.py); not bitsandbytes, which decodes slower than bf16 on CPU.
- int8 on CUDA: bitsandbytes LLM.int8, applied at load time (see loading.py).
- fp8 on CUDA with compute capability >= 8.9 (Ada, Hopper, Blackwell): native
  `torch._scaled_mm` with a dynamic per-row activation scale, where a probe on the device
  itself (`probe_fp8`) runs it; a device that refuses per-row scales (reported on sm_120)
  gets per-tensor activation scales with the weight's row scales applied to the output,
  and one that refuses both gets the weight-only path below.
- fp8 elsewhere: weights stored as float8, decoded at matmul time (CPU has no FP8 math).
  SLERP_ARENA_FP8_FALLBACK=1 forces this path on any GPU, so the decode that cards below
  cc 8.9 run can be tested (and compared) on a card that has native FP8.

The rules depend only on `Hardware` (CUDA or not, native FP8 or not), so they can also be
applied to a meta-device skeleton to size a model for a machine we are not on
(loading.estimate_footprint).
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass

import torch
from torch import nn

from core import zerogpu
from core.errors import first_line
from inference.cpu_kernels import fp8_linear_cpu, int8_linear_cpu, kernel

log = logging.getLogger(__name__)
FP8_MAX = 448.0  # largest finite float8_e4m3fn
FORCE_FALLBACK_ENV = "SLERP_ARENA_FP8_FALLBACK"  # "1": no native FP8 anywhere (see above)


def native_fp8_available(device: torch.device) -> bool:
    if os.environ.get(FORCE_FALLBACK_ENV, "").lower() in ("1", "true"):
        return False
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)


FP8_SCALINGS = ("row", "tensor")  # native FP8 layouts, in the order tried
AT_FIRST_USE = "at first use"  # the layout is probed where the layer first runs (ZeroGPU's worker)


@dataclass(frozen=True)
class Hardware:
    """What the quantization rules depend on."""

    cuda: bool
    native_fp8: bool
    fp8_scaling: str = "row"  # the native FP8 layout: "row", "tensor", or AT_FIRST_USE
    fp8_note: str = ""  # what the device refused, for the backend line

    @classmethod
    def of(cls, device: torch.device, try_native_fp8: bool | None = None) -> Hardware:
        """The device's own rules; `try_native_fp8` overrides the compute-capability test
        (True tries native FP8 on a CPU, as the tests do: the probe still decides)."""
        candidate = native_fp8_available(device) if try_native_fp8 is None else try_native_fp8
        if not candidate:
            return cls(device.type == "cuda", False)
        if zerogpu.on_zerogpu():  # CUDA is emulated here: the GPU is only in the worker a reply runs in
            return cls(True, True, AT_FIRST_USE)
        scaling, note = probe_fp8(str(device))
        return cls(device.type == "cuda", scaling is not None, scaling or "row", note)


@functools.cache
def probe_fp8(device: str) -> tuple[str | None, str]:
    """The first native FP8 layout this device runs correctly, tried on one tiny matmul of
    the shapes and scales the model's layers use, where they will run; and a note of what
    it refused (None, note: neither ran, use the weight-only path)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16, 32, generator=generator).to(device, torch.bfloat16)
    weight = torch.randn(32, 32, generator=generator)
    scale = _per_channel_scale(weight, FP8_MAX)
    weight8 = (weight / scale[:, None]).to(torch.float8_e4m3fn).to(device)
    expected = x.float() @ weight.to(device).t()
    refused = []
    for scaling in FP8_SCALINGS:
        try:
            y = scaled_matmul(x, weight8, scale.to(device), scaling).float()
            error = float((y - expected).norm() / expected.norm())
            problem = "" if error < 0.1 else f"a wrong result, {error:.0%} off"
        except Exception as exc:  # noqa: BLE001 -- what a device refuses comes as any error (cuBLAS, NotImplemented)
            problem = first_line(exc)
        if not problem:
            note = f"this device refused {', '.join(refused)}" if refused else ""
            log.info("native FP8 on %s: per-%s scales %s", device, scaling, note)
            return scaling, note
        refused.append(f"per-{scaling} scales ({problem})")
    log.warning("native FP8 on %s: weight-only, %s", device, "; ".join(refused))
    return None, f"native FP8 refused by this device: {'; '.join(refused)}"


def scaled_matmul(x: torch.Tensor, weight8: torch.Tensor, scale: torch.Tensor, scaling: str) -> torch.Tensor:
    """x @ (weight8 * scale[:, None]).T through torch._scaled_mm, x quantized to e4m3 on the
    fly with one scale per row or one for the whole of x. Per-tensor, the weight's row
    scales are applied to the float32 output instead, so the weights are the same."""
    flat = x.reshape(-1, x.shape[-1])
    amax = flat.abs().amax(dim=1, keepdim=True) if scaling == "row" else flat.abs().amax()
    x_scale = amax.float().clamp_min(1e-12) / FP8_MAX
    x8 = (flat.float() / x_scale).to(torch.float8_e4m3fn)
    if scaling == "row":
        y = torch._scaled_mm(x8, weight8.t(), scale_a=x_scale, scale_b=scale[None, :].float(), out_dtype=x.dtype)
    else:
        one = torch.ones((), device=x.device)
        y = (torch._scaled_mm(x8, weight8.t(), scale_a=x_scale, scale_b=one, out_dtype=torch.float32) * scale).to(x.dtype)
    return y.reshape(*x.shape[:-1], weight8.shape[0])


def _per_channel_scale(weight: torch.Tensor, limit: float) -> torch.Tensor:
    return weight.abs().amax(dim=1).clamp_min(1e-12) / limit


class Int8Linear(nn.Module):
    """y = x @ (int8_weight * scale).T + bias, through the CPU int8 weight-only kernel."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale)
        self.bias = bias

    @classmethod
    def of(cls, linear: nn.Linear) -> Int8Linear:
        w = linear.weight.detach().float()
        scale = _per_channel_scale(w, 127.0)
        return cls(torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale.to(linear.weight.dtype), linear.bias)

    @property
    def backend(self) -> str:
        return ("C kernel for decode, torch GEMM on widened weights for prefill (int8 weight-only)" if kernel()
                else "torch._weight_int8pack_mm, torch GEMM on widened weights for prefill (int8 weight-only)")

    def forward(self, x: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
        """`sizes`: x's rows are several prompts' (cpu_kernels._product)."""
        flat = x.reshape(-1, self.in_features).to(self.scale.dtype)
        y = int8_linear_cpu(flat, self.weight, self.scale, sizes).reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


class FP8Linear(nn.Module):
    """float8_e4m3fn weights with a per-output-channel scale."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, scaling: str | None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale)
        self.bias = bias
        # torch._scaled_mm wants both matrix dims to be multiples of 16.
        fits = self.in_features % 16 == 0 and self.out_features % 16 == 0
        self.scaling = scaling if fits else None  # FP8_SCALINGS, AT_FIRST_USE, or None: weight-only

    @classmethod
    def of(cls, linear: nn.Linear, scaling: str | None) -> FP8Linear:
        w = linear.weight.detach().float()
        scale = _per_channel_scale(w, FP8_MAX)
        return cls((w / scale[:, None]).to(torch.float8_e4m3fn), scale, linear.bias, scaling)

    @property
    def native(self) -> bool:
        return self.scaling is not None

    @property
    def backend(self) -> str:
        if self.scaling == AT_FIRST_USE:
            return "torch._scaled_mm (native FP8), per-row, per-tensor or weight-only as a probe on the GPU finds at the first reply"
        if self.native:
            return f"torch._scaled_mm, per-{self.scaling} scales (native FP8)"
        if self.weight.device.type == "cuda":
            return "fp8 weight-only, cast to the compute dtype per matmul (CUDA without native FP8)"
        return fp8_linear_cpu.backend

    def forward(self, x: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
        """`sizes`: x's rows are several prompts' (cpu_kernels._product; one product on the GPU)."""
        if self.scaling == AT_FIRST_USE:  # probed once per process and device, then kept by the layer
            self.scaling = probe_fp8(str(x.device))[0]
        y = scaled_matmul(x, self.weight, self.scale, self.scaling) if self.native else fp8_linear_cpu(x, self.weight, self.scale, sizes)
        return y if self.bias is None else y + self.bias


def quantize_linears(model: nn.Module, precision: str, device: torch.device, hardware: Hardware | None = None) -> list[str]:
    """Replace every nn.Linear (lm_head too) in place; returns the backends used.
    `hardware` defaults to the device's own; a meta-device skeleton passes the machine it sizes."""
    hardware = hardware or Hardware.of(device)
    backends: set[str] = set()
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    for name, module in targets:
        # On CUDA the lm_head stays in the model dtype: FP8 models keep it (see above), and
        # bitsandbytes int8 leaves the output embedding out too. On CUDA int8 is bitsandbytes
        # at load time; reached here only to size a model, Int8Linear stands in for its
        # Linear8bitLt (the same int8 weight; the float32 row scale bitsandbytes keeps beside
        # it is not a parameter or buffer, so weight_bytes does not count it either).
        if module is output and hardware.cuda:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if precision == "int8" or module is output:
            replacement = Int8Linear.of(module)
        else:
            replacement = FP8Linear.of(module, hardware.fp8_scaling if hardware.native_fp8 else None)
        setattr(parent, child, replacement.to(device))
        note = hardware.fp8_note if isinstance(replacement, FP8Linear) and hardware.fp8_note else ""
        backends.add(f"{replacement.backend} ({note})" if note else replacement.backend)
    return sorted(backends)


def fuse_linears(linears: list[nn.Module]) -> nn.Module:
    """One linear computing `linears` side by side (outputs concatenated), for one matmul
    dispatch instead of several per token (at batch 1 the dispatch is a large share of a
    small model's matmul time). The scales are per output channel, so every
    output is computed exactly as before. The originals are re-pointed at views of the
    fused weights, so memory does not grow and the model's own forward (prefill in
    transformers' generate, batched scoring) still works."""
    first = linears[0]

    def cat(name: str) -> torch.Tensor | None:
        return None if getattr(first, name) is None else torch.cat([getattr(m, name).detach() for m in linears])

    if isinstance(first, Int8Linear):
        fused = Int8Linear(cat("weight"), cat("scale"), cat("bias"))
    elif isinstance(first, FP8Linear):
        fused = FP8Linear(cat("weight"), cat("scale"), cat("bias"), first.scaling)
    else:
        fused = nn.Linear(first.in_features, sum(m.out_features for m in linears), bias=first.bias is not None,
                          device="meta")
        fused.weight = nn.Parameter(cat("weight"), requires_grad=False)
        fused.bias = None if first.bias is None else nn.Parameter(cat("bias"), requires_grad=False)
    start = 0
    for m in linears:
        rows = slice(start, start + m.out_features)
        start += m.out_features
        for name in ("weight", "scale", "bias"):
            old = getattr(m, name, None)
            if old is None:
                continue
            view = getattr(fused, name)[rows]
            setattr(m, name, nn.Parameter(view, requires_grad=False) if isinstance(old, nn.Parameter) else view)
    return fused


def stored_bytes(model: nn.Module) -> int:
    """All parameters and buffers as stored (a tied weight counted once): a loaded model's
    footprint, and the same sum over a meta-device skeleton estimates it."""
    return sum(t.nbytes for t in model.parameters()) + sum(t.nbytes for t in model.buffers())


def linear_weight_bytes(model: nn.Module) -> tuple[int, int]:
    """(bytes of the linear weights as stored, bytes they take in bf16), lm_head included."""
    stored = bf16 = 0
    for module in model.modules():
        if isinstance(module, (Int8Linear, FP8Linear)):
            stored += module.weight.nbytes + module.scale.nbytes
            bf16 += module.weight.numel() * 2
        elif isinstance(module, nn.Linear):
            stored += module.weight.nbytes
            bf16 += module.weight.numel() * 2
    return stored, bf16

