"""Load a model in a precision, and keep loaded models in a cache with a memory budget.

Precisions: fp8, int8, bf16, fp32, and auto (fp8 where the GPU has native FP8, else
int8). Quantized models are loaded in bf16 and their linear layers converted in place
(quantize.py), except int8 on CUDA, which goes through bitsandbytes at load time.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import psutil
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from core import zerogpu
from core.checkpoints import check_shapes, read_config_file, read_weights, skeleton
from core.cpu import native_bf16
from core.errors import UserError, first_line
from core.sources import read_config, resolve_model
from inference.decoder import LeanDecoder, lean_decoder, unsupported_reason
from inference.quantize import Hardware, linear_weight_bytes, quantize_linears, stored_bytes
from inference.sharing import Cores

PRECISIONS = ("auto", "fp8", "int8", "bf16", "fp32")
QUANTIZED_NOTE = "The embedding lookup stays in bf16; every linear, lm_head included, is quantized (lm_head in int8)."
KEEP_FREE_FRACTION = 0.20  # the memory guard keeps this share of RAM / VRAM free

log = logging.getLogger(__name__)
hf_logging.set_verbosity_error()  # GGUF and generation advice is noise in a chat app


@dataclass(frozen=True)
class LoadReport:
    source: str
    precision: str  # what was actually used (auto resolved)
    backend: str
    device: str
    weight_bytes: int  # all parameters and buffers as stored
    linear_bytes: int  # linear-layer weights (+ scales) as stored, lm_head included
    linear_bf16_bytes: int  # the same weights in bf16, for comparison
    load_seconds: float
    note: str

    def summary(self) -> str:
        return (f"{self.precision} via {self.backend} on {self.device}; weights {self.weight_bytes / 1e6:.0f} MB "
                f"(linear {self.linear_bytes / 1e6:.0f} MB vs {self.linear_bf16_bytes / 1e6:.0f} MB in bf16); "
                f"loaded in {self.load_seconds:.1f} s. {self.note}")


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    report: LoadReport
    busy: int = 0  # generations running on it now: a cache never evicts a busy model
    measured_tokens_per_s: float = 0.0  # its last reply's decode speed (0: none yet); sizes ZeroGPU requests
    measured_prefill_tokens_per_s: float = 0.0  # its last long prompt's (0: none yet); a long message's wait is told from it
    cores: Cores = field(default_factory=Cores, repr=False, compare=False)  # its cache's, shared with the cache's other models
    _busy_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _decoder: LeanDecoder | None = field(default=None, repr=False, compare=False)
    _decoder_tried: bool = field(default=False, repr=False, compare=False)  # built (or found impossible) at the first reply
    _decoder_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def decoder(self) -> LeanDecoder | None:
        """Its lean decoder (inference/decoder.py), built once, with the scheduler every
        reply of the model joins; None where generate runs it."""
        if unsupported_reason(self.model):  # asked every time: SLERP_ARENA_DECODER=transformers applies at once
            return None
        with self._decoder_lock:
            if not self._decoder_tried:
                self._decoder, self._decoder_tried = lean_decoder(self.model, self.cores), True
            return self._decoder

    @contextlib.contextmanager
    def in_use(self) -> Iterator[LoadedModel]:
        with self._busy_lock:
            self.busy += 1
        try:
            yield self
        finally:
            with self._busy_lock:
                self.busy -= 1

    @property
    def name(self) -> str:
        return self.report.source

    @property
    def context_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048) or 2048)


def detect_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def scoring_precision(device: torch.device | None = None) -> str:
    """The precision for work through a model's own forward (the t-sweep's scoring, batch
    replies): bf16 on a GPU (a ZeroGPU worker's included) or a CPU with native bf16, fp32
    elsewhere, where emulated bf16 matmuls ran several times slower (docs/benchmarks.md)."""
    gpu = (device or detect_device()).type != "cpu" or zerogpu.on_zerogpu()
    return "bf16" if gpu or native_bf16() else "fp32"


NON_FINITE_CHUNK = 2**20  # elements summed at a time: a float32 copy of 4 MB, not of the whole tensor


def non_finite_tensors(model: torch.nn.Module) -> list[str]:
    """Names of the floating-point weights holding NaN or Inf. A sum is NaN or Inf exactly
    when an element is (real weights are nowhere near overflowing a float32 sum); taken a
    chunk at a time, it needs 4 MB where isfinite would take a byte per weight. Buffers
    are left out: a mask may hold -inf on purpose."""
    return [name for name, p in model.named_parameters() if p.is_floating_point() and not all(
        torch.isfinite(chunk.sum(dtype=torch.float32)) for chunk in p.detach().reshape(-1).split(NON_FINITE_CHUNK))]


def non_finite_refusal(model: torch.nn.Module, ref: str) -> UserError | None:
    bad = non_finite_tensors(model)
    if not bad:
        return None
    more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
    return UserError("model", f"'{ref}' holds NaN or Inf in {bad[0]}{more}: it cannot reply",
                     "pick another model, or merge again from finite parents")


def resolve_precision(precision: str, hardware: Hardware) -> str:
    if precision not in PRECISIONS:
        raise UserError("precision", f"'{precision}' is not supported", f"use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "fp8" if hardware.native_fp8 else "int8"
    return precision


def uses_bitsandbytes(precision: str, hardware: Hardware) -> bool:
    """int8 on CUDA is bitsandbytes, quantized at load time; everything else is quantize.py."""
    return precision == "int8" and hardware.cuda


def _load_bytes(skeleton: torch.nn.Module) -> int:
    """The guard's figure: every parameter in bf16, as the weights are read before quantization."""
    return sum(p.numel() for p in skeleton.parameters()) * 2


def estimate_load_bytes(ref: str) -> int:
    """Bytes the weights take while loading (bf16, before any quantization), from the
    config alone: the model is built on the meta device, which allocates nothing."""
    return _load_bytes(skeleton(read_config(ref), ref))


@dataclass(frozen=True)
class Footprint:
    precision: str  # as resolved for the hardware
    load_bytes: int  # what the memory guard asks of a load (estimate_load_bytes)
    resident_bytes: int  # what the loaded model keeps (LoadReport.weight_bytes)


def estimate_footprint(raw_config: dict, precision: str, hardware: Hardware, name: str = "model") -> Footprint:
    """A model's footprint in `precision` on `hardware`, from its config.json alone: the
    meta-device skeleton goes through the same quantization code a real load runs, and is
    summed as LoadReport sums a loaded model (stored_bytes)."""
    resolved = resolve_precision(precision, hardware)
    model = skeleton(raw_config, name, torch.float32 if resolved == "fp32" else torch.bfloat16)
    load = _load_bytes(model)
    if resolved in ("int8", "fp8"):
        quantize_linears(model, resolved, torch.device("meta"), hardware)
    return Footprint(resolved, load, stored_bytes(model))


def free_memory(device: torch.device) -> tuple[int, int]:
    """(available, total) bytes on the device."""
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return free, total
    memory = psutil.virtual_memory()
    return memory.available, memory.total


def guard_allowance(device: torch.device) -> int:
    """Bytes a new load may take: what is free, less the share of memory kept free."""
    return allowance_of(*free_memory(device))


def allowance_of(available: int, total: int) -> int:
    """The guard's rule, for any memory: the share kept free is the headroom for the KV
    cache and activations of the models that generate."""
    return int(available - KEEP_FREE_FRACTION * total)


def load_model(ref: str, precision: str = "auto", device: torch.device | None = None,
               memory_budget: int | None = None, check_memory: bool = True, hardware: Hardware | None = None,
               cores: Cores | None = None) -> LoadedModel:
    """Load `ref` in `precision`. `memory_budget` overrides the guard's byte allowance;
    `check_memory=False` is for a caller that has made room itself (ModelCache). `cores`:
    shared with the models it will decode beside (sharing.py); its own otherwise.
    `hardware` overrides the device's own rules, to run a path the device would not choose
    (the GPU paths on a CPU, in tests).
    Only safetensors are read (core.sources refuses pickle-only folders: they run code)."""
    device = device or detect_device()
    hardware = hardware or Hardware.of(device)
    resolved = resolve_precision(precision, hardware)
    if check_memory:
        needed = estimate_load_bytes(ref)
        allowance = memory_budget if memory_budget is not None else guard_allowance(device)
        if needed > allowance:
            raise UserError("model", f"'{ref}' needs about {needed / 1e9:.2f} GB to load but only "
                            f"{max(allowance, 0) / 1e9:.2f} GB may be used (20% of memory is kept free)",
                            "close other models, or pick a smaller model")

    started = time.perf_counter()
    folder = resolve_model(ref)
    check_shapes(read_config_file(folder / "config.json", ref), read_weights(folder, ref), ref)
    kwargs: dict = {"trust_remote_code": False, "use_safetensors": True}
    compute_dtype = torch.float32 if resolved == "fp32" else torch.bfloat16
    bitsandbytes = uses_bitsandbytes(resolved, hardware)
    if bitsandbytes:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=compute_dtype,
                                                     device_map=str(device) if bitsandbytes else None, **kwargs)
    except OSError as exc:
        problem = str(exc).splitlines()[0][:200]
        raise UserError("model", f"cannot load '{ref}' ({problem})", "check the path or Hub id") from None
    except Exception as exc:  # noqa: BLE001 -- whatever transformers raised about a stranger's files: one line, traceback logged
        log.warning("loading %s failed", ref, exc_info=True)
        raise UserError("model", f"cannot load '{ref}' ({first_line(exc)})",
                        "re-download the model, or pick another") from None
    if (refusal := non_finite_refusal(model, ref)) is not None:
        del model  # the traceback keeps this frame: the weights go now, not with it
        raise refusal
    if not bitsandbytes:
        model.to(device)
    model.eval()

    if resolved in ("int8", "fp8") and not bitsandbytes:
        backends = quantize_linears(model, resolved, device, hardware)
    elif bitsandbytes:
        backends = [f"bitsandbytes LLM.int8 on {device.type}"]
    else:
        backends = [f"torch {resolved} (no quantization)"]
    weight_bytes = stored_bytes(model)
    linear, linear_bf16 = linear_weight_bytes(model)
    note = QUANTIZED_NOTE if resolved in ("int8", "fp8") else ""
    report = LoadReport(ref, resolved, ", ".join(backends), str(device), weight_bytes, linear, linear_bf16,
                        time.perf_counter() - started, note)
    return LoadedModel(model, tokenizer, report, cores=cores or Cores())


def load_with_weights(folder: str, weights: dict[str, torch.Tensor], precision: str, name: str,
                      device: torch.device | None = None, cores: Cores | None = None) -> LoadedModel:
    """A model of `folder`'s architecture and tokenizer with `weights` swapped in (an
    in-memory merge), then quantized like any other load."""
    device = device or detect_device()
    hardware = Hardware.of(device)
    resolved = resolve_precision(precision, hardware)
    if uses_bitsandbytes(resolved, hardware):
        resolved = "fp8" if hardware.native_fp8 else "bf16"  # bitsandbytes quantizes only at load from disk
    started = time.perf_counter()
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    config = AutoConfig.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # from_pretrained with the weights in hand: nothing is initialised at random first.
    model, info = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)].from_pretrained(
        None, config=config, state_dict=weights, dtype=torch.float32 if resolved == "fp32" else torch.bfloat16,
        output_loading_info=True)
    missing, unexpected = sorted(info["missing_keys"]), sorted(info["unexpected_keys"])
    if missing or unexpected:
        raise UserError("weights", f"do not fit {folder} (missing {missing[:2]}, unexpected {unexpected[:2]})",
                        "preview t curves of the merge this folder holds")
    model.to(device).eval()
    backends = quantize_linears(model, resolved, device) if resolved in ("int8", "fp8") else [f"torch {resolved}"]
    linear, linear_bf16 = linear_weight_bytes(model)
    weight_bytes = stored_bytes(model)
    report = LoadReport(name, resolved, ", ".join(backends), str(device), weight_bytes, linear, linear_bf16,
                        time.perf_counter() - started, "In-memory preview." if resolved not in ("int8", "fp8")
                        else f"In-memory preview. {QUANTIZED_NOTE}")
    return LoadedModel(model, tokenizer, report, cores=cores or Cores())
