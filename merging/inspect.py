"""What the app shows about two parents before anything runs: architecture, layers,
parameters, dtype, and whether they can be merged."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from merging.checkpoint import open_checkpoint
from merging.errors import MergeError
from merging.sources import BUNDLED_PREFIX, HUB_ID, resolve_model


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

    def describe(self) -> str:
        params = f"{self.parameters / 1e6:,.0f}M parameters" if self.parameters else "parameters unknown until download"
        return (f"**{self.ref}** — {self.architecture}, {self.num_layers} layers, hidden {self.hidden_size}, "
                f"vocab {self.vocab_size}, {params}, {self.dtype}{', tied embeddings' if self.tied_embeddings else ''}")


def inspect_model(ref: str) -> ModelInfo:
    path = Path(ref).expanduser()
    if ref.startswith(BUNDLED_PREFIX) or path.suffix == ".gguf" or path.is_dir():
        checkpoint = open_checkpoint(ref, resolve_model(ref))
        return _info(ref, checkpoint.config, checkpoint.parameter_count)
    if HUB_ID.match(ref):
        return _info(ref, _hub_config(ref), None)
    raise MergeError("model", f"'{ref}' is not a directory, a .gguf file or a Hub id",
                     "give a local model folder, a .gguf path, org/name, or bundled:SmolLM2-135M-Instruct")


def compatibility_problems(a: ModelInfo, b: ModelInfo) -> list[str]:
    problems = []
    for label, x, y in (("model_type", a.model_type, b.model_type), ("hidden size", a.hidden_size, b.hidden_size)):
        if x != y:
            problems.append(f"{label} differs ({x} vs {y}): these models cannot be merged")
    if a.num_layers != b.num_layers:
        problems.append(f"layer counts differ ({a.num_layers} vs {b.num_layers}): set a layer range of equal length")
    if a.vocab_size != b.vocab_size:
        problems.append(f"vocab sizes differ ({a.vocab_size} vs {b.vocab_size}): embeddings will be truncated to "
                        f"{min(a.vocab_size, b.vocab_size)} rows")
    return problems


def _info(ref: str, config: dict, parameters: int | None) -> ModelInfo:
    return ModelInfo(ref, (config.get("architectures") or ["?"])[0], str(config.get("model_type", "?")),
                     int(config.get("num_hidden_layers", 0)), int(config.get("hidden_size", 0)), int(config.get("vocab_size", 0)),
                     parameters, str(config.get("dtype") or config.get("torch_dtype") or "?"), bool(config.get("tie_word_embeddings")))


def _hub_config(repo_id: str) -> dict:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return json.loads(Path(hf_hub_download(repo_id, "config.json")).read_text())
    except LocalEntryNotFoundError:
        raise MergeError("model", f"'{repo_id}' is not in the local Hugging Face cache and the Hub is unreachable",
                         "connect to the network, or use a local folder / bundled:SmolLM2-135M-Instruct") from None
    except HfHubHTTPError:
        raise MergeError("model", f"Hub repo '{repo_id}' not found (or gated)", "check the id, or log in with a token") from None
