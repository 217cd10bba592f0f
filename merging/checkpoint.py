"""A model folder as the merge sees it: config.json and a name -> tensor-entry table
built from the safetensors headers alone (no weights are read here)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.checkpoints import TensorEntry, check_against_weights, read_config_file, read_weights
from core.errors import UserError
from merging.architectures import ArchitectureSpec, spec_for


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
    config = read_config_file(path / "config.json", ref)
    tensors = read_weights(path, ref)
    check_against_weights(config, tensors, ref)
    return Checkpoint(ref, path, config, tensors)
