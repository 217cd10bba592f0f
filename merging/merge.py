"""Run a planned merge: stream tensors chunk by chunk into shards inside a temporary
folder next to the output, then rename it into place. A cancel, an error or a killed
process never leaves a partial model at the output path."""

from __future__ import annotations

import errno
import json
import math
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

from core.arrivals import Arrivals
from core.downloads import Progress as Download
from core.errors import UserError
from core.hub_access import hub_token
from core.policy import AccessPolicy
from core.remote import RemoteFile
from core.sources import resolve_model
from merging import slerp_kernel
from merging.chat_templates import resolve_template
from merging.checkpoint import Checkpoint, open_checkpoint, open_parent
from merging.config import MergeConfig
from merging.disk import disk_needs
from merging.feed import DEFAULT_MAX_RAM, Block, Feed, MappedFiles, reads_in_order, single_threaded_math, working_set
from merging.model_card import model_card
from merging.planning import MergePlan, TensorPlan, plan_merge
from merging.safetensors_io import PlannedTensor, StreamingWriter
from merging.slerp import PairStats, coefficients, combine_into, math_device

DEFAULT_SHARD_BYTES = 2 * 10**9
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

    def buffer(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        """A 1-D tensor for the next chunk; the writer may reuse its memory once written."""
        ...

    def write(self, chunk: torch.Tensor) -> int:
        """Take one chunk (a buffer() filled in); return its size in bytes."""
        ...


@dataclass(frozen=True)
class Progress:
    tensors_done: int
    tensors_total: int
    bytes_written: int
    bytes_total: int
    tensor: str
    download: Download | None = None  # Hub parents still arriving

    @property
    def fraction(self) -> float:
        """Done, from 0 to 1: the download's share while one runs (the merge keeps up with it)."""
        if self.download is not None and self.download.total:
            return self.download.done / self.download.total
        return self.tensors_done / max(1, self.tensors_total)

    def line(self) -> str:
        """One line for every front end: the download (MB, MB/s, time left) and the merge."""
        merged = f"{self.tensors_done}/{self.tensors_total} tensors · {self.bytes_written / 1e6:,.0f} MB written"
        return f"Downloading {self.download.repo} · {self.download.line()} · merged {merged}" if self.download else merged


@dataclass(frozen=True)
class TensorReport:
    name: str
    layer: int | None
    t: float
    theta_degrees: float | None  # None for non-float tensors (copied from base_model)
    lerp: bool
    blended: bool  # TensorPlan.blends: the output mixes both parents
    non_finite: tuple[str, ...] = ()  # the parents ("base", "other") holding NaN or Inf in it


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


def load_parents(config: MergeConfig, fetch: bool = True) -> tuple[Checkpoint, Checkpoint]:
    """The two parents; with `fetch` False, Hub parents are opened from their headers and
    their weights left to download while the merge reads them (Checkpoint.pending)."""
    def load(ref: str) -> Checkpoint:
        return open_checkpoint(ref, resolve_model(ref)) if fetch else open_parent(ref)

    base = load(config.base_model)
    return (base, base) if config.other_model == config.base_model else (base, load(config.other_model))


def pending_of(base: Checkpoint, other: Checkpoint) -> list[RemoteFile]:
    return base.pending + (other.pending if other is not base else [])


def parents_nbytes(base: Checkpoint, other: Checkpoint) -> int:
    """The parents' weight bytes, a model merged with itself counted once."""
    return base.nbytes + (other.nbytes if other is not base else 0)


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
    max_ram: int = DEFAULT_MAX_RAM,
    allow_non_finite: bool = False,
) -> MergeResult:
    """Merge `config` into `output_dir`. `policy` (public mode) restricts which local
    paths may be read or written and how big a merge may be. `exists_fix` is the advice
    when the output exists, in the words of the caller's own controls (flag or checkbox).
    `device`: where the SLERP math runs (slerp.math_device; CPU by default). `max_ram`:
    the merge's working set in bytes (feed.parse_max_ram reads what users type).
    `allow_non_finite`: merge parents holding NaN or Inf (refused otherwise), and list
    those tensors in the model card."""
    started = time.perf_counter()
    math_on = math_device(device)
    output = Path(output_dir)
    if policy is not None:
        policy.check_output(output)
        for ref in config.models:
            policy.check_model(ref)
    if output.exists() and not overwrite:
        raise UserError("output_dir", f"'{output}' already exists", exists_fix)
    base, other = load_parents(config, fetch=False)
    plan = plan_merge(config, base, other)
    parents_bytes = parents_nbytes(base, other)
    if policy is not None:
        policy.check_sizes(parents_bytes, plan.output_bytes)
    pending = pending_of(base, other)
    disk_needs(pending, parents_bytes, output.parent, plan.output_bytes).check()
    tokenizer_dir = _tokenizer_dir(config, base, other)
    template = resolve_template(config.chat_template) if config.chat_template else None

    output.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(output)
    cancel = cancel or threading.Event()
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-{os.getpid()}-", dir=output.parent))
    try:
        with Arrivals(pending, reads_in_order(plan.tensors), cancel, hub_token()) as arrivals:
            try:
                reports, written = _write_shards(plan, work, shard_bytes, on_progress, cancel, math_on, max_ram,
                                                 allow_non_finite, arrivals if pending else None)
                arrivals.finish()  # the bytes no tensor of the merge needed: each file completes in the cache
            except UserError:
                if cancel.is_set():
                    raise MergeCancelled() from None
                raise
        _copy_tokenizer(tokenizer_dir, work, template)
        _write_config(plan, work)
        (work / "mergekit_config.yml").write_text(config.to_yaml())
        (work / "README.md").write_text(model_card(config, output.name, plan.warnings, base.architecture))
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


def working_set_bytes(plan: MergePlan, max_ram: int = DEFAULT_MAX_RAM) -> int:
    """The RAM a merge of `plan` adds to the process running it (not the process itself)."""
    return working_set(plan.tensors, max_ram)


class CollectingWriter:
    """Keeps the chunks of one tensor in memory instead of writing them."""

    def __init__(self) -> None:
        self.chunks: list[torch.Tensor] = []

    def buffer(self, numel: int, dtype: torch.dtype) -> torch.Tensor:
        return torch.empty(numel, dtype=dtype)  # kept: never reused

    def write(self, chunk: torch.Tensor) -> int:
        self.chunks.append(chunk)
        return chunk.numel() * chunk.element_size()


def merge_in_memory(config: MergeConfig, max_output_bytes: int, device: str | None = None,
                    max_ram: int = DEFAULT_MAX_RAM) -> dict[str, torch.Tensor]:
    """The merged weights as a state dict (on the CPU), nothing written to disk: for
    re-merging a small model at a new t and swapping it in. Larger outputs are refused
    (RAM, not disk). `device`: where the SLERP math runs (slerp.math_device); `max_ram`:
    the working set beside the result, as in run_merge."""
    math_on = math_device(device)
    base, other = load_parents(config)
    plan = plan_merge(config, base, other)
    if plan.output_bytes > max_output_bytes:
        raise UserError("t-preview", f"this merge is {plan.output_bytes / 1e9:.1f} GB; in-memory previews stop at "
                         f"{max_output_bytes / 1e9:.1f} GB", "run the merge to disk from the Merge tab")
    weights = {}
    with single_threaded_math(), Feed(plan.tensors, max_ram, math_on) as feed:
        for tensor in plan.tensors:
            collector = CollectingWriter()
            report, _ = merge_tensor(tensor, collector, feed, math_on)
            check_finite(report, plan, False, plan.warnings)
            weights[tensor.name] = torch.cat(collector.chunks).reshape(tensor.shape)
    return weights


def _write_shards(plan: MergePlan, folder: Path, shard_bytes: int, on_progress: Callable[[Progress], None] | None,
                  cancel: threading.Event | None, device: torch.device, max_ram: int,
                  allow_non_finite: bool, arrivals: Arrivals | None) -> tuple[list[TensorReport], int]:
    shards = _assign_shards(plan.tensors, shard_bytes)
    names = ["model.safetensors"] if len(shards) == 1 else [
        f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    reports: list[TensorReport] = []
    written = 0
    total = plan.output_bytes
    tensor_name = ""

    def report() -> None:
        if on_progress is not None:
            download = None if arrivals is None or arrivals.done else arrivals.progress("the parents")
            on_progress(Progress(len(reports), len(plan.tensors), written, total, tensor_name, download))

    # One reader, ahead of the math across shards; while Hub parents arrive, it waits for their bytes.
    reader = MappedFiles(arrivals)
    with single_threaded_math(), Feed(plan.tensors, max_ram, device, reader, report if arrivals else None) as feed:
        for shard, shard_name in zip(shards, names, strict=True):
            writer = StreamingWriter(folder / shard_name, [PlannedTensor(t.name, t.out_dtype, t.shape) for t in shard])
            try:
                for tensor in shard:
                    if cancel is not None and cancel.is_set():
                        raise MergeCancelled()
                    tensor_report, nbytes = merge_tensor(tensor, writer, feed, device)
                    check_finite(tensor_report, plan, allow_non_finite, plan.warnings)
                    reports.append(tensor_report)
                    written += nbytes
                    tensor_name = tensor.name
                    report()
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


def merge_tensor(plan: TensorPlan, writer: ChunkWriter, feed: Feed, device: torch.device | None = None) -> tuple[TensorReport, int]:
    """One output tensor, from the feed's blocks, in pieces of CHUNK_ELEMENTS. Blending
    needs two passes (the angle is a global quantity); t = 0 / 1 and a model merged with
    itself need one. The math runs on `device` (CPU by default) in the feed's scratch;
    what reaches the writer is always on the CPU.

    Each block is handled in a function of its own whose frame holds the only view of
    it, and its slot is given back after that function returns: the block's mapping is
    gone before the reader maps another one into its place (the RAM budget holds)."""
    job = feed.jobs[plan.name]
    fa, fb = feed.scratch
    stats = PairStats()
    in_c = plan.blends and slerp_kernel.applies((plan.base.dtype, plan.other.dtype), plan.compute_dtype, plan.out_dtype, device)
    kept: dict[int, Block] = {}
    written = 0

    def emit(values: torch.Tensor) -> int:
        # mergekit casts the result back to `dtype`, then to out_dtype.
        out = writer.buffer(values.numel(), plan.out_dtype)
        cast_into(out, values, plan.compute_dtype)
        return writer.write(out)

    def load(n: int, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # mergekit's load-time cast to `dtype`, then float32 once for all the math.
        cast_into(fa[:n], a, plan.compute_dtype)
        cast_into(fb[:n], b, plan.compute_dtype)
        return fa[:n], fb[:n]

    def copy(i: int) -> tuple[int, int | None]:  # a copy of the base
        block, nbytes = feed.next(job, i), 0
        for _, (a,) in block.pieces():
            if a.is_floating_point():  # a plain sum, for check_finite: NaN or Inf exactly when an element is
                stats.include(float(a.sum(dtype=torch.float32)), 0.0, 0.0)
            nbytes += emit(a)
        return nbytes, block.slot

    def first_pass(i: int) -> tuple[int, int | None]:  # the angle (and the output itself when t is 0 or 1)
        block, nbytes = feed.next(job, i), 0
        for n, (a, b) in block.pieces():
            if in_c:
                stats.include(*slerp_kernel.sums(a, b))
                continue
            va, vb = load(n, a, b)
            stats.add(va, vb)
            if not plan.blends:
                nbytes += emit(vb if plan.t == 1.0 else va)
        if i < job.kept:
            kept[i] = block
            return nbytes, None
        return nbytes, block.slot

    def blend(n: int, a: torch.Tensor, b: torch.Tensor) -> int:
        if not in_c:
            return emit(combine_into(c, *load(n, a, b)))
        if c.lerp and torch.equal(a, b):  # lerp of x with x is x, bit-exact (as combine_into)
            return emit(a)
        out = writer.buffer(n, plan.out_dtype)
        slerp_kernel.combine(a, b, c.s0, c.s1, out)
        return writer.write(out)

    def second_pass(i: int) -> tuple[int, int | None]:  # the blend, from a kept block or one read again
        block = kept.pop(i) if i < job.kept else feed.next(job, i)
        return sum(blend(n, a, b) for n, (a, b) in block.pieces()), block.slot

    def run(step: Callable[[int], tuple[int, int | None]], i: int) -> int:
        nbytes, slot = step(i)
        if slot is not None:
            feed.release(slot)
        return nbytes

    if len(job.entries) == 1:
        written = sum(run(copy, i) for i in range(job.blocks))
        theta = 0.0 if plan.compute_dtype.is_floating_point else None
        bad = () if math.isfinite(stats.sq0) else ("base",)
        return TensorReport(plan.name, plan.layer, plan.t, theta, theta is not None, plan.blends, bad), written
    written = sum(run(first_pass, i) for i in range(job.blocks))
    # The first pass sums every element's square: a sum is NaN or Inf exactly when an
    # element is, so non-finite parents are found at no cost beyond the merge's own.
    bad = tuple(side for side, sq in (("base", stats.sq0), ("other", stats.sq1)) if not math.isfinite(sq))
    c = coefficients(stats, plan.t)
    if plan.blends:
        written += sum(run(second_pass, i) for i in range(job.blocks))
    return TensorReport(plan.name, plan.layer, plan.t, c.theta_degrees, c.lerp, plan.blends, bad), written


def check_finite(report: TensorReport, plan: MergePlan, allow: bool, notes: list[str]) -> None:
    """Refuse a tensor whose parents hold NaN or Inf, or, when `allow`, note it for the
    model card."""
    if not report.non_finite:
        return
    refs = [plan.base.ref if side == "base" else plan.other.ref for side in report.non_finite]
    if not allow:
        raise UserError("model", f"'{refs[0]}' holds NaN or Inf in {report.name} (the first such tensor the merge "
                        "reached; nothing was written)", "replace that parent, or merge anyway with --allow-non-finite "
                        "(the model card then lists such tensors)")
    notes.append(f"{report.name} holds NaN or Inf in {' and '.join(refs)}, and so does the merged tensor")


def cast_into(out: torch.Tensor, values: torch.Tensor, via: torch.dtype) -> None:
    """out <- values cast to `via`, then to out's dtype (mergekit's casts); one copy when
    either step changes nothing. Also moves between devices."""
    out.copy_(values if via in (values.dtype, out.dtype) else values.to(via))


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
