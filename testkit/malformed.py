"""Broken copies of a model folder, one per way a stranger's checkpoint can be malformed:
the safetensors header, its offsets, shapes and dtypes, the config, the shard index, and
non-finite weights. Each case is a name and a function that breaks a fresh copy in place;
tests run every copy through both CLIs and the app."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

from safetensors.torch import load_file, save_file

WEIGHTS = "model.safetensors"


def _split(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _join(path: Path, header: object, data: bytes, header_bytes: bytes | None = None) -> None:
    encoded = header_bytes if header_bytes is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)


def _tensors(header: dict) -> list[str]:
    """Tensor names in data order."""
    return sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])


def _edit_header(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        path = folder / WEIGHTS
        header, data = _split(path)
        _join(path, edit(header), data)
    return apply


def _edit_entry(edit: Callable[[dict, dict], None], which: int = 1) -> Callable[[Path], None]:
    def apply(header: dict) -> dict:
        names = _tensors(header)
        edit(header, header[names[which]])
        return header
    return _edit_header(apply)


def _set_config(**values) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config.update(values)
        (folder / "config.json").write_text(json.dumps(config))
    return apply


def _raw_config(text: str) -> Callable[[Path], None]:
    return lambda folder: (folder / "config.json").write_text(text)


def _truncate(keep: int | None = None, drop: int = 0) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        raw = (folder / WEIGHTS).read_bytes()
        (folder / WEIGHTS).write_bytes(raw[:keep] if keep is not None else raw[:len(raw) - drop])
    return apply


def _append(extra: bytes) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        with open(folder / WEIGHTS, "ab") as fh:
            fh.write(extra)
    return apply


def _header_length(value: int) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        raw = bytearray((folder / WEIGHTS).read_bytes())
        raw[:8] = struct.pack("<Q", value)
        (folder / WEIGHTS).write_bytes(bytes(raw))
    return apply


def _raw_header(text: bytes) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        _, data = _split(folder / WEIGHTS)
        _join(folder / WEIGHTS, None, data, text)
    return apply


def _shift(header: dict, entry: dict, begin: int, end: int) -> None:
    entry["data_offsets"] = [begin, end]


def _reverse(header: dict, entry: dict) -> None:
    entry["data_offsets"] = entry["data_offsets"][::-1]


def _negative(header: dict, entry: dict) -> None:
    entry["data_offsets"] = [-entry["data_offsets"][1], 0]


def _overlap(header: dict, entry: dict) -> None:
    begin, end = entry["data_offsets"]
    entry["data_offsets"] = [begin - 8, end - 8]


def _wrong_size(header: dict, entry: dict) -> None:
    entry["shape"] = [*entry["shape"][:-1], entry["shape"][-1] + 1]


def _swap_shape(header: dict, entry: dict) -> None:
    entry["shape"] = entry["shape"][::-1]


def _dtype(name: str) -> Callable[[dict, dict], None]:
    return lambda header, entry: entry.__setitem__("dtype", name)


def _drop_offsets(header: dict, entry: dict) -> None:
    del entry["data_offsets"]


def _shape_value(value: object) -> Callable[[dict, dict], None]:
    return lambda header, entry: entry.__setitem__("shape", value)


def _sharded(edit: Callable[[Path, dict], None]) -> Callable[[Path], None]:
    """Split the weights over two shards with an index, then break the index."""
    def apply(folder: Path) -> None:
        tensors = load_file(folder / WEIGHTS)
        names = sorted(tensors)
        halves = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
                  "model-00002-of-00002.safetensors": names[len(names) // 2:]}
        weight_map = {}
        for file, part in halves.items():
            save_file({n: tensors[n] for n in part}, folder / file, metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(part, file))
        (folder / WEIGHTS).unlink()
        index = {"metadata": {}, "weight_map": weight_map}
        edit(folder, index)
        if index is not None:
            (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return apply


def _missing_shard(folder: Path, index: dict) -> None:
    (folder / "model-00002-of-00002.safetensors").unlink()


def _outside_shard(folder: Path, index: dict) -> None:
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "../../outside.safetensors"


def _index_not_an_object(folder: Path, index: dict) -> None:
    index.clear()
    index["weight_map"] = ["model-00001-of-00002.safetensors"]


def _index_lists_a_tensor_no_shard_has(folder: Path, index: dict) -> None:
    index["weight_map"]["model.layers.0.mlp.extra.weight"] = "model-00001-of-00002.safetensors"


def _non_finite(value: float) -> Callable[[Path], None]:
    def apply(folder: Path) -> None:
        tensors = load_file(folder / WEIGHTS)
        name = sorted(n for n in tensors if "layers.1.mlp" in n)[0]
        tensors[name] = tensors[name].clone()
        tensors[name].view(-1)[3] = value
        save_file(tensors, folder / WEIGHTS, metadata={"format": "pt"})
    return apply


# name -> what it breaks. The names are the ones the closing table and tests use.
CASES: dict[str, Callable[[Path], None]] = {
    "empty file": _truncate(keep=0),
    "shorter than its header length": _truncate(keep=5),
    "header length past the end": _header_length(2**40),
    "header length over 100 MB": _header_length(2**63),
    "header not JSON": _raw_header(b"{not json" + b" " * 7),
    "header not UTF-8": _raw_header(b"\xff\xfe\x00{}"),
    "header a JSON list": _raw_header(b"[1, 2, 3]"),
    "entry without data_offsets": _edit_entry(_drop_offsets),
    "entry not an object": _edit_header(lambda h: {**h, _tensors(h)[1]: [1, 2]}),
    "offsets reversed": _edit_entry(_reverse),
    "offsets negative": _edit_entry(_negative),
    "offsets overlapping": _edit_entry(_overlap),
    "offsets past the end": _edit_entry(lambda h, e: _shift(h, e, e["data_offsets"][0], e["data_offsets"][1] + 2**30)),
    "shape disagrees with its bytes": _edit_entry(_wrong_size),
    "shape negative": _edit_entry(_shape_value([-1, 32])),
    "shape overflows": _edit_entry(_shape_value([2**62, 2**62])),
    "dtype unknown": _edit_entry(_dtype("Q4_K")),
    "dtype the merge cannot use": _edit_entry(_dtype("U16")),
    "data truncated": _truncate(drop=64),
    "data longer than its header says": _append(b"\0" * 64),
    "shape transposed against the config": _edit_entry(_swap_shape, which=3),
    "config not JSON": _raw_config("{model_type: llama"),
    "config a JSON list": _raw_config("[]"),
    "config of 10^9 layers": _set_config(num_hidden_layers=10**9),
    "config of more layers than the weights hold": _set_config(num_hidden_layers=8),
    "config hidden size negative": _set_config(hidden_size=-32),
    "config hidden size a string": _set_config(hidden_size="32"),
    "config hidden size disagrees with the weights": _set_config(hidden_size=64, num_attention_heads=4),
    "config vocabulary of 10^12": _set_config(vocab_size=10**12),
    "config unknown model_type": _set_config(model_type="not-a-model"),
    "config model_type a list": _set_config(model_type=["llama"]),
    "config nested 10^5 deep": _raw_config("[" * 100_000 + "]" * 100_000),
    "config of a vision tower 10^6 deep": _set_config(vision_config={"model_type": "siglip_vision_model", "num_hidden_layers": 10**6}),
    "index names a missing shard": _sharded(_missing_shard),
    "index points outside the folder": _sharded(_outside_shard),
    "index weight_map not an object": _sharded(_index_not_an_object),
    "index lists a tensor no shard has": _sharded(_index_lists_a_tensor_no_shard_has),
    "weights hold NaN": _non_finite(float("nan")),
    "weights hold Inf": _non_finite(float("inf")),
}


def broken_copy(source: Path, target: Path, case: str) -> Path:
    shutil.copytree(source, target)
    CASES[case](target)
    return target

