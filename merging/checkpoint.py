"""A model folder as the merge sees it: config.json and a name -> tensor-entry table
built from the safetensors headers alone (no weights are read here)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.errors import UserError
from merging.architectures import ArchitectureSpec, spec_for
from merging.safetensors_io import TensorEntry, read_header


@dataclass
class Checkpoint:
    ref: str  # what the user wrote (path, Hub id, GGUF)
    path: Path
    config: dict
    tensors: dict[str, TensorEntry]

    @property
    def architecture(self) -> ArchitectureSpec:
        return spec_for(self.config)

    @property
    def num_layers(self) -> int:
        return int(self.config.get(self.architecture.num_layers_key, 0))

    def entry(self, name: str) -> TensorEntry:
        """The tensor by name; a tied lm_head resolves to the embedding it shares."""
        if name in self.tensors:
            return self.tensors[name]
        for tied, shared in self.architecture.tied:
            if name == tied and shared in self.tensors:
                return self.tensors[shared]
        raise UserError("model", f"'{self.ref}' has no tensor '{name}'", "merge two models of the same architecture")

    @property
    def parameter_count(self) -> int:
        return sum(e.numel for e in self.tensors.values())

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self.tensors.values())


def open_checkpoint(ref: str, path: Path) -> Checkpoint:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        raise UserError("model", f"'{ref}' has an unreadable config.json", "re-download or re-save the model") from None
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted({path / f for f in weight_map.values()})
    else:
        files = sorted(path.glob("*.safetensors"))
    tensors: dict[str, TensorEntry] = {}
    for file in files:
        if not file.is_file():
            raise UserError("model", f"'{ref}' is missing shard {file.name}", "re-download the model")
        tensors.update(read_header(file))
    if not tensors:
        raise UserError("model", f"'{ref}' holds no tensors", "point at a folder with model weights")
    return Checkpoint(ref, path, config, tensors)
