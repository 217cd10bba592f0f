"""A stranger's checkpoint, checked before any of its weights are used: every safetensors
header validated by the safetensors library itself, the shard index, and config.json
against the shapes in those headers. Both engines read a model folder through here.

Why the library validates and we still parse: safetensors checks the format's full rules
(offsets ordered, contiguous and inside the file, each tensor's bytes equal to its shape
times its dtype, the data covering the file exactly) when it opens a file, but it gives
no byte offsets, which the merge's positioned reads need. Opening maps the file and
touches only the header's pages, so RSS stays flat; once the library has accepted a
header, reading its offsets here cannot go wrong."""

from __future__ import annotations

import json
import math
import re
import struct
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from core.errors import UserError, first_line

TORCH_DTYPES = {
    "BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
    "I8": torch.int8, "U8": torch.uint8, "I16": torch.int16, "I32": torch.int32, "I64": torch.int64,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
DTYPE_NAMES = {v: k for k, v in TORCH_DTYPES.items()}
INDEX = "model.safetensors.index.json"
REDOWNLOAD = "re-download the model, or re-save it with safetensors"
# Deeper than any released model (Llama-3.1-405B has 126 layers); bounds the time a config
# may cost to build on the meta device before its weights have been compared with it.
MAX_LAYERS = 1024
# The decoder's layers as the text models name them; a vision tower's blocks do not count.
LAYER_INDEX = re.compile(r"^(?:model\.layers|transformer\.h)\.(\d+)\.")


@dataclass(frozen=True)
class TensorEntry:
    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    start: int  # absolute byte offset of the data in `file`
    nbytes: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def _library_verdict(path: Path) -> str | None:
    """What the safetensors library says is wrong with the file, or None."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, "pt"):
            return None
    except SafetensorError as exc:
        verdict = str(exc).removeprefix("Error while deserializing header: ")
        return re.sub(r", expected one of .*? at line", " at line", verdict)[:200]  # the list of every dtype: noise
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
        return _verdict_by_rules(path)  # larger than the memory the kernel lets it map
    except (OSError, ValueError, OverflowError) as exc:
        return f"unreadable ({exc.__class__.__name__})"


def _verdict_by_rules(path: Path) -> str | None:
    """The format's rules, as the library checks them, for a file it cannot map whole:
    a JSON object of known dtypes and whole-number shapes, whose data offsets start at 0,
    follow each other without gap or overlap, give each tensor its shape's bytes, and end
    where the file ends."""
    try:
        header, data_start = _raw_header(path)
        if not isinstance(header, dict) or data_start > path.stat().st_size:
            return "the header is not a JSON object inside the file"
        at = 0
        spans = sorted((info["data_offsets"], name, info) for name, info in header.items() if name != "__metadata__")
        for (begin, end), name, info in spans:
            expected = _shape_bytes(info)
            if expected is None or not all(isinstance(d, int) and d >= 0 for d in info["shape"]):
                return f"tensor `{name}` has an unknown dtype or a shape that is not whole numbers"
            if begin != at or end - begin != expected:
                return f"tensor `{name}`'s data offsets {[begin, end]} do not follow the one before or fit its shape"
            at = end
        if data_start + at != path.stat().st_size:
            return "the tensors' data does not cover the file exactly"
    except (ValueError, KeyError, TypeError, AttributeError, struct.error, OSError, RecursionError):
        return "unreadable header"
    return None


def _named(path: Path, problem: str) -> str:
    """The library names the tensor in some verdicts only; for the rest, name the first
    tensor whose bytes disagree with its shape and dtype, read from the raw header."""
    if "`" in problem or "tensor" not in problem:
        return problem
    try:
        header = _raw_header(path)[0]
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            expected = _shape_bytes(info)
            if expected is not None and end - begin != expected:
                return f"{problem} `{name}`: {end - begin} bytes for shape {info['shape']} of {info['dtype']}"
    except (ValueError, KeyError, TypeError, AttributeError, struct.error, OSError):
        pass
    return problem


def _shape_bytes(info: dict) -> int | None:
    """The bytes a header entry's shape and dtype take (None for a dtype this app does not know)."""
    dtype = TORCH_DTYPES.get(info["dtype"])
    return None if dtype is None else math.prod(info["shape"]) * dtype.itemsize


def _raw_header(path: Path) -> tuple[dict, int]:
    """The header as JSON, and where the data starts."""
    with open(path, "rb") as fh:
        (header_len,) = struct.unpack("<Q", fh.read(8))
        return json.loads(fh.read(header_len)), 8 + header_len


def read_header(path: Path, ref: str | None = None) -> dict[str, TensorEntry]:
    """name -> where its bytes are, for one safetensors file; refused in one line naming
    the file and the tensor unless the header passes the format's full rules."""
    where = f"'{ref}' shard {path.name}" if ref else str(path)
    problem = _library_verdict(path)
    if problem is not None:
        raise UserError("model", f"{where} is not a valid safetensors file ({_named(path, problem)})", REDOWNLOAD)
    header, data_start = _raw_header(path)
    entries = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = TORCH_DTYPES.get(info["dtype"])
        if dtype is None:
            raise UserError("model", f"{where}: tensor {name} has dtype {info['dtype']}, which this app does not read",
                            "convert the model to bf16, fp16 or fp32")
        begin, end = info["data_offsets"]
        entries[name] = TensorEntry(path, dtype, tuple(info["shape"]), data_start + begin, end - begin)
    return entries


def header_from_bytes(head: bytes, size: int, name: str, place: Path, ref: str) -> dict[str, TensorEntry]:
    """The validated header of a safetensors file not downloaded yet, from its first bytes
    (`head`: the length and the JSON) and its size: written into a sparse file of that size,
    so the library checks it by the same rules as a local file (the data must cover the
    file exactly) while no data is read or stored. Entries point at `place`, where the
    file will be."""
    with tempfile.TemporaryDirectory(prefix="header-") as work:
        sparse = Path(work) / name
        with open(sparse, "wb") as fh:
            fh.write(head)
            fh.truncate(max(size, len(head)))
        return {key: replace(entry, file=place) for key, entry in read_header(sparse, ref).items()}


def _read_json(path: Path, ref: str, what: str) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python parses
        raise UserError("model", f"'{ref}' has an unreadable {what}", REDOWNLOAD) from None
    if not isinstance(value, dict):
        raise UserError("model", f"'{ref}' has a {what} that is not a JSON object", REDOWNLOAD)
    return value


def read_config_file(path: Path, ref: str) -> dict:
    return _read_json(path, ref, "config.json")


def weight_files(folder: Path, ref: str, shards: Iterable[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The shards to read (file names), and the index's tensor -> shard map ({} without an
    index). An index must name files inside the folder, and nothing else. `shards`: the
    .safetensors files there are (a Hub repo's listing before they are downloaded);
    by default the folder's own."""
    present = sorted(p.name for p in folder.glob("*.safetensors")) if shards is None else sorted(shards)
    if not (folder / INDEX).is_file():
        return present, {}
    weight_map = _read_json(folder / INDEX, ref, INDEX).get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise UserError("model", f"'{ref}' has a {INDEX} whose weight_map is not a map of tensor names to shards", REDOWNLOAD)
    for shard in set(weight_map.values()):
        if Path(shard).name != shard or not shard.endswith(".safetensors"):
            raise UserError("model", f"'{ref}' has a {INDEX} naming '{shard[:80]}', which is not a shard in its folder", REDOWNLOAD)
        if shard not in present:
            raise UserError("model", f"'{ref}' is missing shard {shard}", "re-download the model")
    return sorted(set(weight_map.values())), weight_map


def read_weights(folder: Path, ref: str,
                 headers: Mapping[str, Callable[[], dict[str, TensorEntry]]] | None = None) -> dict[str, TensorEntry]:
    """Every tensor of the model in `folder`, each header validated, the index (if any)
    checked against what the shards hold. `headers`: shard name -> its validated header,
    for shards not on disk yet (a Hub repo's, read by range requests); by default each
    file in the folder is read."""
    names, weight_map = weight_files(folder, ref, None if headers is None else headers)
    tensors: dict[str, TensorEntry] = {}
    for name_of_file in names:
        header = headers[name_of_file]() if headers is not None else read_header(folder / name_of_file, ref)
        for name, entry in header.items():
            if weight_map.get(name, name_of_file) != name_of_file:
                continue  # a copy the index does not place here: transformers reads the one it does
            if name in tensors:
                raise UserError("model", f"'{ref}' holds tensor {name} twice ({tensors[name].file.name} and {name_of_file})",
                                REDOWNLOAD)
            tensors[name] = entry
    for name, shard in weight_map.items():
        if tensors.get(name) is None or tensors[name].file.name != shard:
            raise UserError("model", f"'{ref}' has a {INDEX} placing {name} in {shard}, which does not hold it", REDOWNLOAD)
    if not tensors:
        raise UserError("model", f"'{ref}' holds no tensors", "point at a folder with model weights")
    return tensors


def transformers_config(raw: dict, ref: str):
    """config.json as transformers reads it; refused in one line when it cannot be, or
    when its values are not sizes (check_config_values), before anything is built from it."""
    from transformers import CONFIG_MAPPING, AutoConfig

    check_config_values(raw, ref)
    if not isinstance(raw.get("model_type"), str) or raw["model_type"] not in CONFIG_MAPPING:
        raise UserError("model", f"'{ref}' has a config.json whose model_type {str(raw.get('model_type'))[:40]!r} transformers "
                        "does not know", "use a model with a standard transformers architecture")
    try:
        config = AutoConfig.for_model(**raw)
    except Exception as exc:  # noqa: BLE001 -- a stranger's config can fail any of transformers' checks
        raise UserError("model", f"'{ref}' has a config.json transformers cannot read ({first_line(exc)})",
                        "use a model with a standard transformers architecture and config") from None
    layers = getattr(config, "num_hidden_layers", 1)  # under whatever key this architecture names it
    if not _whole(layers) or layers > MAX_LAYERS:
        raise UserError("model", f"'{ref}' has a config.json giving {str(layers)[:20]} layers",
                        f"fix its layer count: a model has from 1 to {MAX_LAYERS}")
    return config


def skeleton(raw: dict, ref: str, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """The model of config.json `raw` on the meta device: every shape, no memory, built in
    a bounded time (transformers_config caps its depth)."""
    from transformers import AutoModelForCausalLM

    config = transformers_config(raw, ref)
    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, dtype=dtype)
    except Exception as exc:  # noqa: BLE001 -- negative sizes, heads that do not divide, unknown classes
        raise UserError("model", f"'{ref}' has a config.json that describes no buildable model ({first_line(exc)})",
                        "fix config.json, or re-download the model") from None


SIZE_KEYS = ("hidden_size", "intermediate_size", "vocab_size", "num_attention_heads", "num_key_value_heads", "head_dim",
             "max_position_embeddings")
LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "depth")
EMBEDDINGS = ("model.embed_tokens.weight", "transformer.wte.weight")


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31


def check_config_values(raw: dict, ref: str) -> tuple[str, int | None]:
    """The sizes in config.json (and in its nested text_config, vision_config, …) are whole
    numbers, each depth at most MAX_LAYERS: checked before anything is built from it.
    Returns the key holding the top level's layer count, and the count (None where the
    config gives none)."""
    for name, nested in raw.items():
        if name.endswith("_config") and isinstance(nested, dict):
            check_config_values(nested, ref)
    for key in SIZE_KEYS:
        if raw.get(key) is not None and not _whole(raw[key]):
            raise UserError("model", f"'{ref}' has a config.json whose {key} is {repr(raw[key])[:20]}",
                            f"fix {key} in config.json: a whole number above 0")
    key = next((k for k in LAYER_KEYS if k in raw), LAYER_KEYS[0])
    layers = raw.get(key)
    if key in raw and (not _whole(layers) or layers > MAX_LAYERS):
        raise UserError("model", f"'{ref}' has a config.json giving {str(layers)[:20]} layers",
                        f"fix {key} in config.json: a model has from 1 to {MAX_LAYERS}")
    return key, layers


def check_against_weights(raw: dict, tensors: dict[str, TensorEntry], ref: str) -> None:
    """config.json against the weights' headers, without building anything (the merge
    runs this; it never imports transformers): its sizes are whole numbers, it gives as
    many layers as the weights hold, and the embedding's shape is its vocabulary by its
    hidden size. `check_shapes` compares every tensor, where transformers is at hand."""
    key, layers = check_config_values(raw, ref)
    in_weights = {int(m.group(1)) for name in tensors if (m := LAYER_INDEX.match(name))}
    # Fewer layers than the config gives would load the rest as random weights; more is
    # how some checkpoints ship extra layers (DeepSeek-V3's next-token predictor).
    if in_weights and layers is not None and max(in_weights) + 1 < layers:
        raise UserError("model", f"'{ref}' has a config.json giving {layers} layers, and weights holding {max(in_weights) + 1}",
                        f"fix {key} in config.json, or re-download the model")
    embedding = next((tensors[name] for name in EMBEDDINGS if name in tensors), None)
    expected = (raw.get("vocab_size"), raw.get("hidden_size"))
    if embedding is not None and None not in expected and embedding.shape != expected:
        raise UserError("model", f"'{ref}': config.json gives a vocabulary of {expected[0]} by a hidden size of {expected[1]}, "
                        f"and its embedding in {embedding.file.name} is {list(embedding.shape)}",
                        "check that config.json belongs to these weights, or re-download the model")


def check_shapes(raw: dict, tensors: dict[str, TensorEntry], ref: str) -> None:
    """Every tensor the config's model and the weights both name has the same shape in
    each, as transformers requires at load (its own error is a page long)."""
    check_against_weights(raw, tensors, ref)
    expected = skeleton(raw, ref).state_dict()
    # Names that match nothing (a checkpoint transformers renames as it loads) are left to it.
    for name in (name for name in tensors if name in expected):
        if tuple(expected[name].shape) != tensors[name].shape:
            raise UserError("model", f"'{ref}': config.json gives {name} the shape {list(expected[name].shape)}, "
                            f"and {tensors[name].file.name} holds {list(tensors[name].shape)}",
                            "check that config.json belongs to these weights, or re-download the model")
