"""Run a planned merge: stream tensors chunk by chunk into shards inside a temporary
folder next to the output, then rename it into place. A cancel, an error or a killed
process never leaves a partial model at the output path."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from core.errors import UserError
from core.policy import AccessPolicy
from core.sources import resolve_model
from merging.chat_templates import resolve_template
from merging.checkpoint import Checkpoint, open_checkpoint
from merging.config import MergeConfig
from merging.model_card import model_card
from merging.planning import MergePlan, TensorPlan, plan_merge
from merging.safetensors_io import PlannedTensor, StreamingWriter, chunk_ranges, read_elements
from merging.slerp import PairStats, coefficients, combine, math_device

DEFAULT_SHARD_BYTES = 2 * 10**9
# 1M elements: 4 MB per float32 buffer. Large enough that per-chunk Python overhead is
# noise (and that most layer tensors of small models are one chunk), small enough that
# peak RSS stays flat whatever the model size.
CHUNK_ELEMENTS = 1024 * 1024
# Peak memory of merge_tensor + StreamingWriter, in float32 buffers of one chunk (or of
# the largest tensor when it is smaller): the two parents' reads and float32 copies, the
# blend's temporaries and result, its cast, and the chunks queued for the disk writer,
# plus a fixed part (plan, headers, writer thread). Calibrated against the VmHWM of real
# merges (tests/test_dry_run.py measures one) rather than counted by hand: the allocator
# keeps more than the live buffers.
WORKING_SET_BUFFERS = 12
WORKING_SET_FIXED_BYTES = 8 * 10**6
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json",
    "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json", "generation_config.json",
)


class MergeCancelled(UserError):
    def __init__(self) -> None:
        super().__init__("merge", "cancelled by the user", "nothing was written; run it again")


class ChunkWriter(Protocol):
    """Where merge_tensor puts an output tensor's chunks, in order: a shard on disk
    (StreamingWriter), memory (an in-memory preview) or nowhere (the dry run's timing)."""

    def write(self, chunk: torch.Tensor) -> int:
        """Take one chunk; return its size in bytes."""
        ...


@dataclass(frozen=True)
class Progress:
    tensors_done: int
    tensors_total: int
    bytes_written: int
    bytes_total: int
    tensor: str


@dataclass(frozen=True)
class TensorReport:
    name: str
    layer: int | None
    t: float
    theta_degrees: float | None  # None for non-float tensors (copied from base_model)
    lerp: bool
    blended: bool  # TensorPlan.blends: the output mixes both parents


@dataclass
class MergeResult:
    output_dir: Path
    config: MergeConfig
    tensors: list[TensorReport]
    num_layers: int
    bytes_written: int
    seconds: float
    warnings: list[str] = field(default_factory=list)
    vocab_size: int | None = None

    @property
    def blended(self) -> int:
        return sum(1 for r in self.tensors if r.blended)

    def summary(self) -> str:
        """The one-line result every front end prints."""
        return (f"{len(self.tensors)} tensors ({self.blended} blended), {self.num_layers} layers, "
                f"{self.bytes_written / 1e6:,.1f} MB written in {self.seconds:.2f} s")


def load_parents(config: MergeConfig) -> tuple[Checkpoint, Checkpoint]:
    base = open_checkpoint(config.base_model, resolve_model(config.base_model))
    if config.other_model == config.base_model:
        return base, base
    return base, open_checkpoint(config.other_model, resolve_model(config.other_model))


def run_merge(
    config: MergeConfig,
    output_dir: str | Path,
    *,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    overwrite: bool = False,
    on_progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    policy: AccessPolicy | None = None,
    exists_fix: str = "choose another output name, or overwrite it (--overwrite)",
    device: str | None = None,
) -> MergeResult:
    """Merge `config` into `output_dir`. `policy` (public mode) restricts which local
    paths may be read or written and how big a merge may be. `exists_fix` is the advice
    when the output exists, in the words of the caller's own controls (flag or checkbox).
    `device`: where the SLERP math runs (slerp.math_device; CPU by default)."""
    started = time.perf_counter()
    math_on = math_device(device)
    output = Path(output_dir)
    if policy is not None:
        policy.check_output(output)
        for ref in config.models:
            policy.check_model(ref)
    if output.exists() and not overwrite:
        raise UserError("output_dir", f"'{output}' already exists", exists_fix)
    base, other = load_parents(config)
    plan = plan_merge(config, base, other)
    if policy is not None:
        policy.check_sizes(base.nbytes + (other.nbytes if other is not base else 0), plan.output_bytes)
    tokenizer_dir = _tokenizer_dir(config, base, other)
    template = resolve_template(config.chat_template) if config.chat_template else None

    output.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(output)
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-{os.getpid()}-", dir=output.parent))
    try:
        reports, written = _write_shards(plan, work, shard_bytes, on_progress, cancel, math_on)
        _copy_tokenizer(tokenizer_dir, work, template)
        _write_config(plan, work)
        (work / "mergekit_config.yml").write_text(config.to_yaml())
        (work / "README.md").write_text(model_card(config, output.name, plan.warnings))
        if cancel is not None and cancel.is_set():
            raise MergeCancelled()
        _move_into_place(work, output)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise UserError("output_dir", f"the disk under '{output.parent}' is full (the merge needs "
                             f"{plan.output_bytes / 1e9:.2f} GB)", "free disk space or choose another output folder") from None
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return MergeResult(output, config, reports, plan.num_layers, written, time.perf_counter() - started,
                       list(plan.warnings), plan.vocab_size)


def working_set_bytes(plan: MergePlan) -> int:
    """The RAM a merge of `plan` adds to the process running it (not the process itself)."""
    return working_set_for(max((t.numel for t in plan.tensors), default=0))


def working_set_for(largest_numel: int) -> int:
    """The same for a merge whose largest tensor has `largest_numel` elements: sizing a
    merge from a config, without the files."""
    return WORKING_SET_BUFFERS * min(largest_numel, CHUNK_ELEMENTS) * 4 + WORKING_SET_FIXED_BYTES


class CollectingWriter:
    """Keeps the chunks of one tensor in memory instead of writing them."""

    def __init__(self) -> None:
        self.chunks: list[torch.Tensor] = []

    def write(self, chunk: torch.Tensor) -> int:
        self.chunks.append(chunk)
        return chunk.numel() * chunk.element_size()


def merge_in_memory(config: MergeConfig, max_output_bytes: int, device: str | None = None) -> dict[str, torch.Tensor]:
    """The merged weights as a state dict (on the CPU), nothing written to disk: for
    re-merging a small model at a new t and swapping it in. Larger outputs are refused
    (RAM, not disk). `device`: where the SLERP math runs (slerp.math_device)."""
    math_on = math_device(device)
    base, other = load_parents(config)
    plan = plan_merge(config, base, other)
    if plan.output_bytes > max_output_bytes:
        raise UserError("t-preview", f"this merge is {plan.output_bytes / 1e9:.1f} GB; in-memory previews stop at "
                         f"{max_output_bytes / 1e9:.1f} GB", "run the merge to disk from the Merge tab")
    weights = {}
    for tensor in plan.tensors:
        collector = CollectingWriter()
        merge_tensor(tensor, collector, math_on)
        weights[tensor.name] = torch.cat(collector.chunks).reshape(tensor.shape)
    return weights


def _write_shards(plan: MergePlan, folder: Path, shard_bytes: int, on_progress: Callable[[Progress], None] | None,
                  cancel: threading.Event | None, device: torch.device) -> tuple[list[TensorReport], int]:
    shards = _assign_shards(plan.tensors, shard_bytes)
    names = ["model.safetensors"] if len(shards) == 1 else [
        f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    reports: list[TensorReport] = []
    written = 0
    total = plan.output_bytes
    for shard, shard_name in zip(shards, names, strict=True):
        writer = StreamingWriter(folder / shard_name, [PlannedTensor(t.name, t.out_dtype, t.shape) for t in shard])
        try:
            for tensor in shard:
                if cancel is not None and cancel.is_set():
                    raise MergeCancelled()
                report, nbytes = merge_tensor(tensor, writer, device)
                reports.append(report)
                written += nbytes
                if on_progress is not None:
                    on_progress(Progress(len(reports), len(plan.tensors), written, total, tensor.name))
        except BaseException:
            writer.abort()
            raise
        writer.close()
    if len(shards) > 1:
        weight_map = {t.name: n for shard, n in zip(shards, names, strict=True) for t in shard}
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return reports, written


def _assign_shards(tensors: list[TensorPlan], shard_bytes: int) -> list[list[TensorPlan]]:
    shards: list[list[TensorPlan]] = [[]]
    size = 0
    for t in tensors:
        nbytes = t.numel * t.out_dtype.itemsize
        if shards[-1] and size + nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += nbytes
    return shards


def merge_tensor(plan: TensorPlan, writer: ChunkWriter, device: torch.device | None = None) -> tuple[TensorReport, int]:
    """One output tensor, streamed in chunks. Blending needs two passes (the angle is a
    global quantity); t = 0 / 1 and a model merged with itself need one. The math runs on
    `device` (CPU by default); what reaches the writer is always on the CPU."""
    device = device or torch.device("cpu")

    def cast(x: torch.Tensor) -> torch.Tensor:
        # mergekit casts parents to `dtype` on load and the result back to it; then out_dtype.
        return x.to(plan.compute_dtype).to(plan.out_dtype).cpu()

    def read(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        # To the math's device in the stored dtype (fewer bytes to move), cast to `dtype`
        # (mergekit's load-time cast), then to float32 once for all the math.
        a = read_elements(plan.base, start, stop).to(device).to(plan.compute_dtype).float()
        b = read_elements(plan.other, start, stop).to(device).to(plan.compute_dtype).float()
        return a, b

    ranges = list(chunk_ranges(plan.numel, CHUNK_ELEMENTS))
    written = 0
    if not plan.compute_dtype.is_floating_point or plan.same_bytes:
        for start, stop in ranges:
            written += writer.write(cast(read_elements(plan.base, start, stop)))
        theta = 0.0 if plan.compute_dtype.is_floating_point else None
        return TensorReport(plan.name, plan.layer, plan.t, theta, theta is not None, plan.blends), written

    stats = PairStats()
    if not plan.blends:  # t is 0 or 1: the output is one parent; the angle comes for free
        for start, stop in ranges:
            a, b = read(start, stop)
            stats.add(a, b)
            written += writer.write(cast(b if plan.t == 1.0 else a))
        c = coefficients(stats, plan.t)
        return TensorReport(plan.name, plan.layer, plan.t, c.theta_degrees, c.lerp, plan.blends), written

    if len(ranges) == 1:  # the common case: one read serves both passes
        a, b = read(0, plan.numel)
        stats.add(a, b)
        c = coefficients(stats, plan.t)
        written += writer.write(cast(combine(c, a, b)))
        return TensorReport(plan.name, plan.layer, plan.t, c.theta_degrees, c.lerp, plan.blends), written
    for start, stop in ranges:
        stats.add(*read(start, stop))
    c = coefficients(stats, plan.t)
    for start, stop in ranges:
        written += writer.write(cast(combine(c, *read(start, stop))))
    return TensorReport(plan.name, plan.layer, plan.t, c.theta_degrees, c.lerp, plan.blends), written


def _tokenizer_dir(config: MergeConfig, base: Checkpoint, other: Checkpoint) -> Path:
    source = config.tokenizer_source
    if source in (None, "base", config.base_model):
        return base.path
    if source == config.other_model:
        return other.path
    if source == "union":
        # A union of two identical vocabularies is the base vocabulary; building a real
        # union would also need the embedding rows remapped, which we do not do.
        if _read_bytes(base.path / "tokenizer.json") == _read_bytes(other.path / "tokenizer.json"):
            return base.path
        raise UserError("tokenizer_source", "'union' of two different vocabularies is not supported",
                         "use `tokenizer_source: base` or name one of the two models")
    raise UserError("tokenizer_source", f"'{source}' is not base, union or one of the two models",
                     "use base, or the name of one of the models")


def _read_bytes(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() else None


def _copy_tokenizer(source: Path, folder: Path, template: str | None) -> None:
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, folder / name)
    if template is not None:
        (folder / "chat_template.jinja").write_text(template)
        (folder / "chat_template.json").unlink(missing_ok=True)
        tokenizer_config = folder / "tokenizer_config.json"
        if tokenizer_config.is_file():  # an inline template there would compete with ours
            data = json.loads(tokenizer_config.read_text())
            if data.pop("chat_template", None) is not None:
                tokenizer_config.write_text(json.dumps(data, indent=2) + "\n")


def _write_config(plan: MergePlan, folder: Path) -> None:
    config = dict(plan.base.config)
    config.pop("quantization_config", None)
    layers_key = plan.base.architecture.num_layers_key
    base_layers = plan.base.num_layers
    # Per-layer lists (Gemma2/Qwen2 `layer_types`, …) follow the layers that were kept.
    for key, value in list(config.items()):
        if isinstance(value, list) and len(value) == base_layers and base_layers != 0:
            config[key] = [value[i] for i in plan.base_layer_of_output]
    config[layers_key] = plan.num_layers
    if plan.vocab_size is not None:
        config["vocab_size"] = plan.vocab_size
    float_dtypes = {t.out_dtype for t in plan.tensors if t.out_dtype.is_floating_point}
    if float_dtypes:
        config["dtype"] = str(max(float_dtypes, key=lambda d: d.itemsize)).removeprefix("torch.")
        config.pop("torch_dtype", None)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def _move_into_place(work: Path, output: Path) -> None:
    if not output.exists():
        work.rename(output)
        return
    # Overwrite: park the old model aside first, so at every instant the output path
    # holds either the complete old model or the complete new one.
    parked = output.with_name(f".{output.name}.old-{os.getpid()}")
    output.rename(parked)
    work.rename(output)
    shutil.rmtree(parked, ignore_errors=True)


def _remove_stale_partials(output: Path) -> None:
    """Temporary folders left by a merge process that was killed (its pid is gone)."""
    for leftover in output.parent.glob(f".{output.name}.partial-*"):
        pid = leftover.name.split(".partial-")[1].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
