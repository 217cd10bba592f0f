"""What the app shows about two parents before anything runs: architecture, layers,
parameters, dtype, and whether they can be merged."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.architectures import family_of
from core.sources import kind_of, read_config, resolve_model
from merging.checkpoint import open_checkpoint
from merging.planning import incompatibilities


@dataclass(frozen=True)
class ModelInfo:
    ref: str
    architecture: str
    model_type: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    parameters: int | None  # None when only the config is at hand (a Hub id not downloaded)
    dtype: str
    tied_embeddings: bool
    config: dict = field(repr=False, compare=False)

    def describe(self) -> str:
        params = f"{self.parameters / 1e6:,.0f}M parameters" if self.parameters else "parameters unknown until download"
        return (f"**{self.ref}** — {self.architecture}, {self.num_layers} layers, hidden {self.hidden_size}, "
                f"vocab {self.vocab_size}, {params}, {self.dtype}{', tied embeddings' if self.tied_embeddings else ''}")


def inspect_model(ref: str) -> ModelInfo:
    """Local models are opened (headers only) to count parameters; for a Hub id only
    config.json is fetched, not the weights."""
    if kind_of(ref) == "hub":
        return _info(ref, read_config(ref), None)
    checkpoint = open_checkpoint(ref, resolve_model(ref))
    return _info(ref, checkpoint.config, checkpoint.parameter_count)


def compatibility_problems(a: ModelInfo, b: ModelInfo) -> list[str]:
    return [p.text + (": these models cannot be merged" if p.fatal else "") for p in incompatibilities(a.config, b.config)]


def _info(ref: str, config: dict, parameters: int | None) -> ModelInfo:
    return ModelInfo(ref, (config.get("architectures") or ["?"])[0], str(config.get("model_type", "?")),
                     int(config.get(family_of(config.get("model_type")).num_layers_key, 0)), int(config.get("hidden_size", 0)),
                     int(config.get("vocab_size", 0)), parameters, str(config.get("dtype") or config.get("torch_dtype") or "?"),
                     bool(config.get("tie_word_embeddings")), config)
