"""Tensor naming per architecture, as data (one registry, no if-chains).

A spec says which tensors belong to a decoder layer (and which layer), which tensors
are vocab-sized (their rows may be truncated when the parents' vocabularies differ),
and which config.json key holds the layer count. Any model whose layers are named
`model.layers.N.` works through the generic entry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class ArchitectureSpec:
    name: str
    layer_pattern: str = r"^model\.layers\.(\d+)\."
    vocab_tensors: tuple[str, ...] = ("model.embed_tokens.weight", "lm_head.weight")
    # A tied lm_head is absent from the checkpoint; its weights are these.
    tied: tuple[tuple[str, str], ...] = (("lm_head.weight", "model.embed_tokens.weight"),)
    num_layers_key: str = "num_hidden_layers"

    def layer_of(self, tensor_name: str) -> int | None:
        match = re.match(self.layer_pattern, tensor_name)
        return int(match.group(1)) if match else None

    def rename_layer(self, tensor_name: str, new_index: int) -> str:
        match = re.match(self.layer_pattern, tensor_name)
        assert match, tensor_name
        return tensor_name[: match.start(1)] + str(new_index) + tensor_name[match.end(1) :]


GENERIC = ArchitectureSpec("generic (model.layers.N.)")

# model_type in config.json -> spec. The four seed families share mergekit's decoder
# naming; they are listed so that an unsupported model_type is a visible choice.
REGISTRY: dict[str, ArchitectureSpec] = {
    "llama": ArchitectureSpec("Llama"),
    "mistral": ArchitectureSpec("Mistral"),
    "qwen2": ArchitectureSpec("Qwen2"),
    "qwen3": ArchitectureSpec("Qwen3"),
    "gemma": ArchitectureSpec("Gemma"),
    "gemma2": ArchitectureSpec("Gemma2"),
    "phi3": ArchitectureSpec("Phi-3"),
}


def spec_for(config: dict) -> ArchitectureSpec:
    return REGISTRY.get(str(config.get("model_type", "")), GENERIC)
