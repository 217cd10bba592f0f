"""The smallest server that speaks the Hub's download protocol as huggingface_hub 2.x calls
it, on 127.0.0.1, serving repos built in a test (no Hub here). Point HF_ENDPOINT at it.

What huggingface_hub's snapshot_download asks, and what this answers:
- GET /api/models/{repo}/revision/{rev}: the repo's commit sha (repo_info);
- GET /api/models/{repo}/tree/{rev}?recursive=true: its files with sizes (list_repo_tree);
- HEAD /{repo}/resolve/{rev}/{file}: X-Repo-Commit, ETag, Content-Length (file metadata);
- GET /{repo}/resolve/{rev}/{file}, with Range (`bytes=A-`, `bytes=A-B`): the bytes, 206 with
  Content-Range for a range;
- GET /api/models/{repo}/auth-check: 200 when the token may download the repo (HfApi.auth_check);
- GET /api/whoami-v2: the account of a token in `users` (Gradio's local sign-in asks it);
- POST /api/repos/create, /api/validate-yaml, /api/{models,datasets}/{repo}/preupload/{rev} and .../commit/{rev}:
  uploads (HfApi.upload_folder, CommitScheduler), every file "regular" (inline in the
  commit), written into the repo's folder; only a token in `users` may write, and only
  into its own namespace (403 otherwise). Datasets are keyed "datasets/{repo}".
Errors come as the Hub sends them, with X-Error-Code (RepoNotFound, GatedRepo), so
huggingface_hub classifies them itself. Per repo: `gated_for` (tokens granted access;
others get GatedRepo for its files: 401 without a token, 403 with one), `bytes_per_s` (a slow download), `drop_after` (the first
GET of each file is cut after that many bytes, as a dropped connection), `cut_after` (after that many bytes of
.safetensors served, every GET of one is cut: the network gone until a test sets it to None),
`xet` (.safetensors files announce Xet storage, X-Xet-Hash, as most Hub repos do) and `hold_below`/`hold_s` (a GET
whose range starts below that offset waits first, so later ranges arrive before earlier ones).
`HubServer(bytes_per_s=…)` caps the whole server's rate, shared by every connection: a fixed bandwidth.
`sent` counts the body bytes served per file path.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


class Pace:
    """A bandwidth shared by every connection that waits on it (None: unlimited)."""

    def __init__(self, bytes_per_s: float | None) -> None:
        self.bytes_per_s = bytes_per_s
        self._lock = threading.Lock()
        self._clock = 0.0  # when the next block may go

    def wait(self, nbytes: int) -> None:
        if not self.bytes_per_s:
            return
        with self._lock:
            self._clock = max(self._clock, time.monotonic()) + nbytes / self.bytes_per_s
            due = self._clock
        time.sleep(max(0.0, due - time.monotonic()))


@dataclass
class Repo:
    folder: Path
    gated_for: set[str] | None = None  # None: public; else the tokens with access
    bytes_per_s: float | None = None
    drop_after: int | None = None
    dropped: set[str] = field(default_factory=set)  # files whose first GET was cut already
    cut_after: int | None = None
    served: int = 0  # .safetensors bytes sent, for cut_after
    xet: bool = False
    hold_below: int = 0
    hold_s: float = 0.0
    pace: Pace = field(init=False)

    def __post_init__(self) -> None:
        self.pace = Pace(self.bytes_per_s)  # one rate for the repo, however many connections share it

    @property
    def sha(self) -> str:
        names = sorted(p.relative_to(self.folder).as_posix() for p in self.folder.rglob("*") if p.is_file())
        return hashlib.sha1("\n".join(names).encode()).hexdigest()

    def files(self) -> list[Path]:
        return sorted(p for p in self.folder.rglob("*") if p.is_file())


class HubServer:
    def __init__(self, bytes_per_s: float | None = None):
        self.pace = Pace(bytes_per_s)
        self.sent: dict[str, int] = {}
        self.repos: dict[str, Repo] = {}
        self.users: dict[str, str] = {}  # token -> username
        self.store = Path(tempfile.mkdtemp(prefix="hub-server-"))  # the folders of repos created by uploads
        self.commits: list[tuple[str, str]] = []  # (repo, username) of each commit, in order
        self.requests: list[tuple[str, str, str]] = []  # (method, path, Range header) in order
        self.finished: list[tuple[str, str]] = []  # (path, Range header) of each GET whose body went out whole, in order
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                server.answer(self, head=True)

            def do_GET(self) -> None:
                server.answer(self, head=False)

            def do_POST(self) -> None:
                server.upload(self)

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._http.shutdown()
        self._http.server_close()
        shutil.rmtree(self.store, ignore_errors=True)

    def add(self, repo_id: str, folder: Path, **behaviour) -> Repo:
        self.repos[repo_id] = Repo(Path(folder), **behaviour)
        return self.repos[repo_id]

    def answer(self, handler: BaseHTTPRequestHandler, head: bool) -> None:
        path = unquote(urlsplit(handler.path).path)
        self.requests.append(("HEAD" if head else "GET", path, handler.headers.get("Range", "")))
        token = (handler.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        if path == "/api/whoami-v2":
            if token not in self.users:
                return self._error(handler, 401, "", "Invalid credentials in Authorization header", head)
            name = self.users[token]
            return self._json(handler, {"type": "user", "name": name, "fullname": name.title(), "avatarUrl": "", "orgs": []})
        api = path.startswith("/api/")
        repo_id, parts = _repo_of(path)
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(handler, 404, "RepoNotFound", "Repository not found", head)
        # As on the Hub, a gated repo's info and file list are public; its files and auth-check are
        # refused: 401 without a token, 403 with one not granted.
        if repo.gated_for is not None and token not in repo.gated_for and not (api and parts[:1] in (["revision"], ["tree"])):
            return self._error(handler, 403 if token else 401, "GatedRepo", "Access to this model is restricted", head)
        if api and parts[:1] == ["revision"]:
            return self._json(handler, {"id": repo_id, "modelId": repo_id, "sha": repo.sha, "private": False,
                                        "gated": repo.gated_for is not None and "manual",
                                        "siblings": [{"rfilename": p.relative_to(repo.folder).as_posix()} for p in repo.files()]})
        if api and parts[:1] == ["auth-check"]:
            return self._json(handler, {})
        if api and parts[:1] == ["tree"]:
            return self._json(handler, [{"type": "file", "path": p.relative_to(repo.folder).as_posix(), "size": p.stat().st_size,
                                         "oid": _digest(p)[:40]} for p in repo.files()])
        if not api and parts[:1] == ["resolve"]:
            file = repo.folder / "/".join(parts[2:])
            if not file.is_file():
                return self._error(handler, 404, "EntryNotFound", "Entry not found", head)
            return self._file(handler, repo, file, head)
        return self._error(handler, 404, "", "Not found", head)

    def upload(self, handler: BaseHTTPRequestHandler) -> None:
        path = unquote(urlsplit(handler.path).path)
        body = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        self.requests.append(("POST", path, ""))
        user = self.users.get((handler.headers.get("Authorization") or "").removeprefix("Bearer ").strip())
        if user is None:
            return self._error(handler, 401, "", "Invalid credentials in Authorization header", False)
        if path == "/api/validate-yaml":  # a README's front matter, checked before a commit that holds one
            return self._json(handler, {"warnings": []})
        if path == "/api/repos/create":
            asked = json.loads(body)
            kind = "datasets/" if asked.get("type") == "dataset" else ""
            repo_id = f"{kind}{asked.get('organization') or user}/{asked['name']}"
            if (asked.get("organization") or user) != user:
                return self._error(handler, 403, "", "You don't have the rights to create a repo in this namespace", False)
            if repo_id in self.repos:
                return self._error(handler, 409, "", "You already created this repo", False, url=f"{self.url}/{repo_id}")
            folder = self.store / repo_id
            folder.mkdir(parents=True)
            self.add(repo_id, folder)
            return self._json(handler, {"url": f"{self.url}/{repo_id}", "name": repo_id.removeprefix("datasets/")})
        repo_id, parts = _repo_of(path)
        repo = self.repos.get(repo_id)
        if repo is None:
            return self._error(handler, 404, "RepoNotFound", "Repository not found", False)
        if repo_id.removeprefix("datasets/").split("/")[0] != user:
            return self._error(handler, 403, "", "You don't have the rights to write to this repo", False)
        if parts[:1] == ["preupload"]:
            files = json.loads(body)["files"]
            return self._json(handler, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]})
        if parts[:1] == ["commit"]:
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    target = repo.folder / item["value"]["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(base64.b64decode(item["value"]["content"]))
            self.commits.append((repo_id, user))
            return self._json(handler, {"commitUrl": f"{self.url}/{repo_id}/commit/{repo.sha}", "commitOid": repo.sha,
                                        "pullRequestUrl": None})
        return self._error(handler, 404, "", "Not found", False)

    def _file(self, handler: BaseHTTPRequestHandler, repo: Repo, file: Path, head: bool) -> None:
        size = file.stat().st_size
        start, stop = 0, size
        ranged = handler.headers.get("Range", "")
        if ranged.startswith("bytes="):
            first, _, last = ranged.removeprefix("bytes=").partition("-")
            start, stop = int(first), min(size, int(last) + 1) if last else size
        handler.send_response(206 if ranged else 200)
        handler.send_header("ETag", f'"{_digest(file)}"')
        handler.send_header("X-Repo-Commit", repo.sha)
        handler.send_header("Content-Length", str(stop - start))
        if ranged:
            handler.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        handler.send_header("Accept-Ranges", "bytes")
        weights = file.suffix == ".safetensors"
        if repo.xet and weights:
            handler.send_header("X-Xet-Hash", _digest(file))
            handler.send_header("X-Xet-Refresh-Route", f"{self.url}/api/models/xet-read-token")
        handler.end_headers()
        if head:
            return
        if start < repo.hold_below:
            time.sleep(repo.hold_s)
        cut = stop - start
        if repo.drop_after is not None and file.name not in repo.dropped:
            repo.dropped.add(file.name)
            cut = min(cut, repo.drop_after)
        key = str(file.relative_to(repo.folder))
        step = 64 * 1024
        with open(file, "rb") as fh:
            fh.seek(start)
            for offset in range(0, cut, step):
                if weights and repo.cut_after is not None and repo.served >= repo.cut_after:
                    cut = offset
                    break
                block = fh.read(min(step, cut - offset))
                repo.pace.wait(len(block))
                self.pace.wait(len(block))
                handler.wfile.write(block)
                self.sent[key] = self.sent.get(key, 0) + len(block)
                if weights:
                    repo.served += len(block)
        if cut < stop - start:  # the connection drops with bytes still owed
            handler.wfile.flush()
            handler.close_connection = True
            handler.connection.close()
        else:
            self.finished.append((handler.path, ranged))

    def _json(self, handler: BaseHTTPRequestHandler, value: object) -> None:
        body = json.dumps(value).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _error(self, handler: BaseHTTPRequestHandler, status: int, code: str, message: str, head: bool, **more: str) -> None:
        body = json.dumps({"error": message, **more}).encode()
        handler.send_response(status)
        if code:
            handler.send_header("X-Error-Code", code)
        handler.send_header("X-Error-Message", message)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if not head:  # a HEAD answer has no body: one would be read as the next answer on the connection
            handler.wfile.write(body)


def _digest(file: Path) -> str:
    """The file's sha256, as the Hub's ETag of an LFS file (cached: a file is hashed once).
    Past 4 GB, the digest of its name, size and time instead: a test's sparse giant is
    never read whole."""
    stat = file.stat()
    return _digest_of(file, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _digest_of(file: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    if size > 4 * 10**9:
        digest.update(f"{file}|{size}|{mtime_ns}".encode())
        return digest.hexdigest()
    with open(file, "rb") as fh:
        while block := fh.read(2**22):
            digest.update(block)
    return digest.hexdigest()


def _repo_of(path: str) -> tuple[str, list[str]]:
    """("org/name" or "datasets/org/name", the path's parts after it) of an API or file path."""
    parts = path.removeprefix("/api/").removeprefix("models/").strip("/").split("/")
    n = 3 if parts[0] == "datasets" else 2
    return "/".join(parts[:n]), parts[n:]
