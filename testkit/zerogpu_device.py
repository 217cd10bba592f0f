"""ZeroGPU on a machine without a GPU: a stand-in for the device API that the `spaces`
package (0.51.3) calls, and the real package imported in ZeroGPU mode against it, so tests
drive the real `spaces.GPU` wrappers: a real fork per worker, real pickling through its
queues, its real quota refusals.

What `spaces` needs from its environment (spaces/config.py:17-20, spaces/zero/__init__.py:14):
SPACES_ZERO_GPU=true, and SPACES_ZERO_DEVICE_API_URL, the device API's base URL. Its client
(spaces/zero/api.py:85-170, called from spaces/zero/client.py) uses five endpoints, all
served here:

    POST /startup-report                 at Blocks.launch (spaces/zero/__init__.py:29-41)
    POST /schedule?durationSeconds&token&…   before each call: admit it, or refuse it (429)
    POST /allow?allowToken&pid           from the forked worker (spaces/zero/wrappers.py:145)
    POST /release?allowToken&fail        when the call ends (wrappers.py:359-368)
    GET  /queue-size

/schedule admits a call while the requested duration fits what the visitor has left, and
refuses it with 429 and {"left", "wait"} (spaces/zero/api.py:51-53, 138-139) otherwise,
which spaces/zero/client.py:153-207 turns into its gr.Error: "You have exceeded your
ZeroGPU quota (30s requested vs. 10s left). Try again in 0:05:00." The visitor is whoever
the request's X-IP-Token (a JWT, client.py:322-330) names; this stand-in reads its payload
as {"user": name, "auth": None | "regular" | "pro"} (`token_for`). No token: the Space's
own pool ("Space app has reached its GPU limit"). A visitor is charged, at /release, the
seconds the call held the device (never more than it asked for).

CUDA without a GPU (`zerogpu_space`): spaces patches torch's CUDA at import and, in each
worker, unpatches it and moves the emulated-CUDA tensors to the real GPU. Three places
need a GPU or a CUDA build of torch, and only those five are stood in for:
- spaces/zero/torch/patching.py:56 keeps `torch._C._cuda_init`, which a CPU build lacks: it
  gets one for as long as spaces is imported, raising what CUDA calls raise on a CPU build;
- spaces/zero/torch/patching.py:453-456 `is_in_bad_fork` (zero/__init__.py:23) hands
  `torch.cuda._is_in_bad_fork` to a forked ProcessPoolExecutor, which pickles it; a CPU
  build has an unpicklable lambda there, so the import sees a module-level function
  answering the same (False);
- spaces/zero/torch/static.py:31 reads `torch.version.cuda.startswith(…)` at import; a CPU
  build has None there, so the import sees "12.8" and the value is put back after it;
- spaces/zero/torch/patching.py:415-417 `init` (wrappers.py:148) makes the worker's first
  CUDA tensor: here it only sets CUDA_VISIBLE_DEVICES, as the real one does first;
- patching.py:422-451 `move` (wrappers.py:151-154) copies the emulated-CUDA tensors to the
  GPU and synchronizes: here nothing may be emulated-CUDA (the models stay on the CPU, as
  the app's ModelCache puts them where torch.cuda.is_available() was False at import), so
  it checks that and skips the synchronize.
Everything else runs as on a Space: the CUDA emulation patch (patching.py:305-328) is live
in the thread that imported spaces until the context exits, and the worker's own unpatch.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import multiprocessing
import os
import secrets
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from urllib.parse import parse_qs, urlparse

QUOTA_S = {None: 120, "regular": 300, "pro": 2400}  # a day's quota by sign-in (NOTES.md, Hugging Face Spaces)
REFILL_S = 24 * 3600  # what "Try again in …" says: the stand-in's quota refills a day after its first use
SPACE = "(the Space)"  # the pool a call without an X-IP-Token draws from
DEVICE_UUID = "GPU-zerogpu-stand-in"


def token_for(user: str, auth: str | None = None) -> str:
    """An X-IP-Token naming `user` (auth None: not signed in; "regular": a free account;
    "pro"). spaces only decodes its payload (spaces/zero/utils.py:102-104); nothing checks
    the signature, here or there."""
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")
    return f"{part({'alg': 'none'})}.{part({'user': user, 'auth': auth})}.stand-in"


@dataclass
class Visitor:
    auth: str | None
    left: int
    first_use: float | None = None


@dataclass
class Grant:
    visitor: str
    requested: int
    started: float
    pid: int | None = None


@dataclass
class ZeroGPUDevice:
    """The device API on 127.0.0.1 (a free port), served from a thread. `calls` lists
    every request as (path, params); `pids` every worker pid /allow was told about."""
    quota_s: dict = field(default_factory=lambda: dict(QUOTA_S))
    idle: bool = False  # /schedule's `idle`: True lets spaces reuse a live worker (wrappers.py:335); False forks one per call
    max_duration_s: int | None = None  # a longer request is illegal (client.py:163-173); None: the visitor's whole quota
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    pids: list[int] = field(default_factory=list)
    _visitors: dict[str, Visitor] = field(default_factory=dict)
    _grants: dict[str, Grant] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() it first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ZeroGPUDevice:
        device = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 -- http.server's name
                self._answer()

            def do_GET(self) -> None:  # noqa: N802
                self._answer()

            def _answer(self) -> None:
                url = urlparse(self.path)
                params = {k: v[-1] for k, v in parse_qs(url.query).items()}
                status, body, headers = device.handle(self.command, url.path, params)
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", "Content-Length": str(len(data)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args) -> None:  # quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="zerogpu device stand-in", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def left(self, user: str = SPACE) -> int:
        """Seconds `user` (a token_for name, or SPACE) has left."""
        with self._lock:
            return self._visitor(user, None).left

    def set_left(self, user: str, seconds: int, auth: str | None = None) -> None:
        with self._lock:
            self._visitor(user, auth).left = seconds

    def _visitor(self, user: str, auth: str | None) -> Visitor:
        if user not in self._visitors:
            self._visitors[user] = Visitor(auth, self.quota_s[auth])
        return self._visitors[user]

    def handle(self, method: str, path: str, params: dict[str, str]) -> tuple[int, object, dict[str, str]]:
        """One request: (status, JSON body, extra headers), as spaces/zero/api.py reads them."""
        with self._lock:
            self.calls.append((path, params))
            if (method, path) == ("POST", "/startup-report"):
                return 200, None, {}
            if (method, path) == ("GET", "/queue-size"):
                return 200, 0.0, {}
            if (method, path) == ("POST", "/schedule"):
                return self._schedule(params)
            if (method, path) == ("POST", "/allow"):
                grant = self._grants.get(params.get("allowToken", ""))
                if grant is None:
                    return 404, {"detail": "unknown allowToken"}, {}
                grant.pid = int(params["pid"])
                self.pids.append(grant.pid)
                return 200, None, {}
            if (method, path) == ("POST", "/release"):
                grant = self._grants.pop(params.get("allowToken", ""), None)
                if grant is None:
                    return 404, {"detail": "unknown allowToken"}, {}
                used = min(grant.requested, math.ceil(time.monotonic() - grant.started))
                self._visitors[grant.visitor].left = max(0, self._visitors[grant.visitor].left - used)
                return (200 if grant.pid is not None else 204), None, {}
            return 404, {"detail": f"no {method} {path}"}, {}

    def _schedule(self, params: dict[str, str]) -> tuple[int, object, dict[str, str]]:
        user, auth = SPACE, None
        if (token := params.get("token")) is not None:
            payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
            user, auth = payload["user"], payload.get("auth")
        visitor = self._visitor(user, auth)
        headers = {"X-Authenticated": auth} if auth else {}
        requested = int(params.get("durationSeconds", 60))
        now = time.monotonic()
        visitor.first_use = visitor.first_use if visitor.first_use is not None else now
        wait = max(0, round(visitor.first_use + REFILL_S - now))
        if requested > (self.max_duration_s or self.quota_s[visitor.auth]):
            return 429, {"left": visitor.left, "wait": -1}, {**headers, "X-Approve-Result": "illegal-duration"}
        if requested > visitor.left:
            return 429, {"left": visitor.left, "wait": wait}, {**headers, "X-Approve-Result": "quota-exceeded"}
        allow_token = secrets.token_hex(16)
        self._grants[allow_token] = Grant(user, requested, now)
        body = {"idle": self.idle, "nvidiaIndex": 0, "nvidiaUUID": DEVICE_UUID, "allowToken": allow_token}
        return 200, body, {**headers, "X-Approve-Result": "approved"}


def _cpu_init(nvidia_uuid: str) -> None:
    """spaces/zero/torch/patching.py:415-417 without its `torch.Tensor([0]).cuda()`."""
    os.environ["CUDA_VISIBLE_DEVICES"] = nvidia_uuid


def _cpu_move(callback=None) -> None:
    """spaces/zero/torch/patching.py:447-451 with nothing to move: no GPU to move it to."""
    from spaces.zero.torch import patching

    moving = [t for t in patching.cuda_aliases.values() if t is not None] or patching.tensor_packs
    assert not moving, "emulated-CUDA tensors need a GPU to move to; keep the models on the CPU under the stand-in"


def _no_cuda_init() -> None:
    raise AssertionError("Torch not compiled with CUDA enabled")


def _not_in_bad_fork() -> bool:
    return False


def _forget_spaces() -> None:
    for name in [n for n in sys.modules if n == "spaces" or n.startswith("spaces.")]:
        del sys.modules[name]


@contextlib.contextmanager
def zerogpu_space(device: ZeroGPUDevice) -> Iterator[ModuleType]:
    """The process as a ZeroGPU Space sees it, against `device` (started): the environment
    Hugging Face sets, and the real `spaces` imported in that mode with the stand-ins above.
    Yields the module. On exit: the worker processes forked meanwhile are ended (SIGTERM, the
    way spaces' worker expects to be stopped: wrappers.py:424), the CUDA patch is undone
    (patching.py:330-355), what spaces changed in Gradio is put back (gr.Blocks.launch,
    spaces/zero/gradio.py:155-163; TrackedIterable.__reduce__, gradio.py:56,137; through
    spaces' own references, so this module imports no gradio), the environment restored and
    `spaces` forgotten, so the next import starts afresh."""
    import torch

    children = {p.pid for p in multiprocessing.active_children()}
    names = ("SPACES_ZERO_GPU", "SPACES_ZERO_DEVICE_API_URL", "NO_PROXY", "no_proxy")
    saved_env = {name: os.environ.get(name) for name in names}
    cuda_version, bad_fork, had_cuda_init = torch.version.cuda, torch.cuda._is_in_bad_fork, hasattr(torch._C, "_cuda_init")
    local = ",".join(filter(None, ("127.0.0.1", "localhost", os.environ.get("NO_PROXY"))))
    os.environ.update(SPACES_ZERO_GPU="true", SPACES_ZERO_DEVICE_API_URL=device.url, NO_PROXY=local, no_proxy=local)
    _forget_spaces()
    zero_gradio = zero_torch = tracked_reduce = None
    try:
        if not had_cuda_init:
            torch._C._cuda_init = _no_cuda_init  # spaces/zero/torch/patching.py:56
        torch.version.cuda = cuda_version or "12.8"  # spaces/zero/torch/static.py:31
        torch.cuda._is_in_bad_fork = _not_in_bad_fork  # spaces/zero/torch/patching.py:455
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Error while reading infos from Nvidia driver FS")  # zero/config.py:33: no GPU here
            import spaces
            import spaces.zero.gradio as zero_gradio
            import spaces.zero.torch as zero_torch
        torch.version.cuda, torch.cuda._is_in_bad_fork = cuda_version, bad_fork
        tracked_reduce = zero_gradio.TrackedIterable.__dict__.get("__reduce__")  # spaces sets it at a call, not at import
        zero_torch.init, zero_torch.move = _cpu_init, _cpu_move
        yield spaces
    finally:
        for child in multiprocessing.active_children():
            if child.pid not in children:
                child.terminate()
                child.join(10)
        if zero_torch is not None:
            zero_torch.unpatch()
        if zero_gradio is not None:
            zero_gradio.gr.Blocks.launch = zero_gradio._orig_launch
            if tracked_reduce is not None:
                zero_gradio.TrackedIterable.__reduce__ = tracked_reduce
            elif "__reduce__" in zero_gradio.TrackedIterable.__dict__:
                del zero_gradio.TrackedIterable.__reduce__
        torch.version.cuda, torch.cuda._is_in_bad_fork = cuda_version, bad_fork
        if not had_cuda_init and hasattr(torch._C, "_cuda_init"):
            del torch._C._cuda_init
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        _forget_spaces()
