"""A model folder as the merge sees it: config.json and a name -> tensor-entry table
built from the safetensors headers alone (no weights are read here). A Hub parent is
opened from its headers (core/remote.py): its weight files may still be to download."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from core.architectures import Family, family_of
from core.checkpoints import TensorEntry, check_against_weights, read_config_file, read_weights
from core.errors import UserError
from core.remote import RemoteFile, open_remote
from core.sources import kind_of, resolve_model


@dataclass
class Checkpoint:
    ref: str  # what the user wrote (path, Hub id, GGUF)
    path: Path
    config: dict
    tensors: dict[str, TensorEntry]
    pending: list[RemoteFile] = field(default_factory=list)  # weight files still on the Hub

    @property
    def architecture(self) -> Family:
        return family_of(self.config.get("model_type"))

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


def open_checkpoint(ref: str, path: Path, tensors: dict[str, TensorEntry] | None = None,
                    pending: list[RemoteFile] | None = None) -> Checkpoint:
    """The model in `path`; `tensors` read elsewhere (a Hub model's headers) when given."""
    config = read_config_file(path / "config.json", ref)
    tensors = read_weights(path, ref) if tensors is None else tensors
    check_against_weights(config, tensors, ref)
    return Checkpoint(ref, path, config, tensors, pending or [])


def open_parent(ref: str) -> Checkpoint:
    """A parent as the merge plans it: a Hub id from its headers, without its weights
    (they download while the merge reads them); anything else resolved to its folder."""
    if kind_of(ref) != "hub":
        return open_checkpoint(ref, resolve_model(ref))
    remote = open_remote(ref)
    return open_checkpoint(ref, remote.folder, remote.tensors, remote.pending)


def download_note(refs: list[str], what: str) -> str | None:
    """One line saying that `what` (the divergence map, the t-sweep), which reads every
    weight, downloads the Hub parents first and how much; None when all are here."""
    pending = {f.blob: f.size for ref in dict.fromkeys(refs) if kind_of(ref) == "hub" for f in open_parent(ref).pending}
    if not pending:
        return None
    return f"{what} reads every weight: downloading {sum(pending.values()) / 1e6:,.0f} MB of the parents first"
