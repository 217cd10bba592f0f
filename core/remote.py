"""A Hub model opened from its headers, none of its weights: config.json, the index and
the tokenizer come as small files, and each .safetensors shard's header by range
requests, validated by the same rules as a local file's (checkpoints.header_from_bytes).
Shards already in the Hugging Face cache are read there, as they are. What is left to
fetch is a list of RemoteFile, for core/arrivals.py to download while the merge reads it.

Where the downloaded files go: huggingface_hub's own cache layout (blobs/<etag>, a
symlink in snapshots/<commit>/), so the chat and any later merge find them cached."""

from __future__ import annotations

import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from core.checkpoints import TensorEntry, header_from_bytes, read_header, read_weights
from core.errors import UserError
from core.sources import HUB_PATTERNS, check_hub_access, check_model_dir, hub_errors

# The first request of a header: most fit (a 7B model's is about 30 KB); a longer one
# costs a second request for the rest.
HEAD_FIRST = 64 * 1024
MAX_HEADER = 100 * 10**6  # the safetensors library's own limit
SMALL_FILES = [p for p in HUB_PATTERNS if p != "*.safetensors"]
TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RemoteFile:
    repo: str
    name: str
    url: str  # the resolve URL at the commit (the Hub redirects to its CDN or its Xet bridge)
    size: int
    local: Path  # snapshots/<commit>/<name>, where the merge's tensor entries point
    blob: Path  # blobs/<etag>, where its bytes land
    head: bytes = field(repr=False)  # its first bytes, fetched for the header


@dataclass
class RemoteModel:
    folder: Path  # the snapshot folder: config.json, the index, the tokenizer
    tensors: dict[str, TensorEntry]
    pending: list[RemoteFile]  # the shards not in the cache yet


def open_remote(repo: str) -> RemoteModel:
    """Hub model `repo`, planned from its headers. Offline, only the cache counts."""
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.file_download import repo_folder_name

    from core.downloads import snapshot
    from core.hub_access import hub_token

    repo = repo.strip()
    check_hub_access(repo)
    token = hub_token()
    with hub_errors(repo):
        folder = Path(snapshot(repo, SMALL_FILES))
        if constants.HF_HUB_OFFLINE:
            from core.sources import resolve_model

            local = resolve_model(repo)
            return RemoteModel(local, read_weights(local, repo), [])
        commit = folder.name
        listing = {item.path: item.size for item in HfApi(token=token).list_repo_tree(repo, revision=commit)
                   if item.path.endswith(".safetensors") and hasattr(item, "size")}
        check_model_dir(folder, repo, listing)
        cache = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo, repo_type="model")
        cached = {name: Path(path) for name in listing
                  if isinstance(path := try_to_load_from_cache(repo, name, revision=commit), str)}
        with ThreadPoolExecutor(max_workers=8) as pool:
            remote = dict(zip([n for n in listing if n not in cached],
                              pool.map(lambda n: _remote_file(repo, n, commit, listing[n], cache, folder, token),
                                       [n for n in listing if n not in cached]), strict=True))
    pending = []
    for name, file in remote.items():
        if file.blob.is_file():  # the same bytes under another revision: link them in, as huggingface_hub does
            link_into_snapshot(file)
            cached[name] = file.local
        else:
            pending.append(file)
    headers = {name: (lambda p=path: read_header(p, repo)) for name, path in cached.items()}
    headers |= {f.name: (lambda f=f: header_from_bytes(f.head, f.size, f.name, f.local, repo)) for f in pending}
    return RemoteModel(folder, read_weights(folder, repo, headers), pending)


def _remote_file(repo: str, name: str, commit: str, listed: int, cache: Path, folder: Path, token: str | None) -> RemoteFile:
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(repo, name, revision=commit)
    meta = get_hf_file_metadata(url, token=token)
    size = meta.size if meta.size is not None else listed
    if not meta.etag:  # huggingface_hub's cache names every file by it
        raise UserError("model", f"'{repo}' serves {name} without an ETag", "try again later, or download the model yourself")
    head = fetch_range(url, 0, min(size, HEAD_FIRST), token, name, repo)
    if len(head) >= 8:
        (length,) = struct.unpack("<Q", head[:8])
        if 8 + length > len(head) and length <= min(MAX_HEADER, size - 8):
            head += fetch_range(url, len(head), 8 + length, token, name, repo)
    return RemoteFile(repo, name, url, size, folder / name, cache / "blobs" / meta.etag, head)


def range_headers(token: str | None, start: int, stop: int) -> dict[str, str]:
    """Bytes [start, stop) as they are stored: a CDN that may compress ignores Range
    (huggingface_hub's own downloads ask for identity too)."""
    from huggingface_hub.utils import build_hf_headers

    return {**build_hf_headers(token=token), "Range": f"bytes={start}-{stop - 1}", "Accept-Encoding": "identity"}


def check_range(response, file_name: str, repo: str, start: int) -> None:
    """The answer is the range asked for, uncompressed: anything else is refused in one line
    rather than written at the wrong offsets."""
    got = response.headers.get("Content-Range", "")
    if response.status_code != 206 or not got.startswith(f"bytes {start}-") or response.headers.get("Content-Encoding"):
        raise UserError("download", f"'{repo}' did not answer a range request for {file_name} with its bytes "
                        f"(HTTP {response.status_code}{', ' + got if got else ''})", "try again later")


def fetch_range(url: str, start: int, stop: int, token: str | None, name: str, repo: str) -> bytes:
    """Bytes [start, stop) of a Hub file, in one request (errors as huggingface_hub raises them)."""
    from huggingface_hub.utils import get_session, hf_raise_for_status

    if stop <= start:
        return b""
    with get_session().stream("GET", url, headers=range_headers(token, start, stop), follow_redirects=True,
                              timeout=TIMEOUT_S) as response:
        if response.status_code >= 400:
            response.read()
            hf_raise_for_status(response)
        check_range(response, name, repo, start)
        body = bytearray()
        for chunk in response.iter_raw(2**16):
            body += chunk
            if len(body) >= stop - start:
                break
    return bytes(body[:stop - start])


def link_into_snapshot(file: RemoteFile) -> None:
    """The snapshot's entry for a file whose blob is complete, as huggingface_hub links it."""
    if not file.local.exists():
        file.local.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(file.local):  # a link to a blob that is gone
            file.local.unlink()
        os.symlink(os.path.relpath(file.blob, file.local.parent), file.local)
