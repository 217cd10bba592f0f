"""A chat pane served by an OpenAI-compatible server (`transformers serve`, vLLM, SGLang,
…) instead of a model loaded here: reference `http(s)://HOST:PORT/v1#MODEL_NAME`.

It streams through the same interface as an in-process model (`answer` fills a Reply
and calls `on_text` as the text grows), so it runs in its own thread beside the others
in stream_side_by_side. The server applies its own chat template: we send messages, not
a prompt. Stop is checked at every streamed chunk and closes the stream, which servers
take as the signal to stop generating. Errors come back in the Reply, one line each.

The API key is read at every request from SLERP_ARENA_ENDPOINT_KEY, else OPENAI_API_KEY
(local servers ignore it); the per-chunk timeout from SLERP_ARENA_ENDPOINT_TIMEOUT (seconds).
Timeouts go through the openai SDK's own type: the HTTP library under it is its business.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass

from core.errors import UserError
from core.sources import endpoint_of
from inference.chat import Message
from inference.generation import GenerationSettings, Reply

KEY_VARIABLES = ("SLERP_ARENA_ENDPOINT_KEY", "OPENAI_API_KEY")
CONNECT_TIMEOUT_S = 10.0
DEFAULT_READ_TIMEOUT_S = 60.0  # per chunk: a cold server's first token may take a while
DETAIL_CHARS = 160  # a server's error text is cut here, so the pane keeps one line


@dataclass(frozen=True)
class EndpointModel:
    ref: str
    base_url: str
    model: str
    served_by: str  # HOST:PORT

    @classmethod
    def of(cls, ref: str) -> EndpointModel:
        endpoint = endpoint_of(ref)
        return cls(ref.strip(), endpoint.base_url, endpoint.model, endpoint.host)

    @property
    def name(self) -> str:
        return self.ref

    def summary(self) -> str:
        return f"served by {self.served_by} as '{self.model}' (OpenAI-compatible API; its own chat template and precision)"

    def answer(self, history: list[Message], settings: GenerationSettings, stop: threading.Event, system_prompt: str = "",
               on_text=lambda text: None, reply: Reply | None = None) -> Reply:
        """One streamed reply, filled into `reply` as it grows; errors are returned in it."""
        reply = reply or Reply(self.name)
        started = time.perf_counter()
        stream = None
        try:
            timeout = Timeouts.from_environment()
            stream = self._client(timeout).chat.completions.create(**self.request(history, settings, system_prompt))
            for chunk in stream:
                if stop.is_set():
                    break
                if chunk.usage is not None:  # the server's own token count, where it sends one (transformers serve, vLLM)
                    reply.stats.new_tokens = max(reply.stats.new_tokens, chunk.usage.completion_tokens or 0)
                piece = "".join(choice.delta.content or "" for choice in chunk.choices if choice.delta is not None)
                if not piece:
                    continue
                reply.stats.new_tokens += 1  # one chunk is one token for these servers; usage above corrects it
                if reply.stats.first_token_s is None:
                    reply.stats.first_token_s = time.perf_counter() - started
                reply.stats.seconds = time.perf_counter() - started
                reply.text += piece
                on_text(reply.text)
            reply.stopped = stop.is_set()
        except UserError as exc:  # a setting of this app's owner
            reply.error = str(exc)
        except Exception as exc:  # noqa: BLE001 -- shown in this pane; the other panes go on
            reply.error = str(self._user_error(exc, timeout, answered=stream is not None, replying=bool(reply.text),
                                               waited=time.perf_counter() - started))
        finally:
            if stream is not None:
                stream.close()  # ends the HTTP response: the server stops generating
        reply.stats.seconds = time.perf_counter() - started
        reply.done = True
        return reply

    def request(self, history: list[Message], settings: GenerationSettings, system_prompt: str) -> dict:
        """The chat completion request: the conversation as messages and the sampling
        settings the OpenAI API has (top_k and repetition_penalty are not part of it).
        temperature 0 is greedy on these servers."""
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages += [{"role": m["role"], "content": m["content"]} for m in history]
        return {"model": self.model, "messages": messages, "stream": True, "temperature": settings.temperature,
                "top_p": settings.top_p, "max_tokens": settings.max_new_tokens, "seed": settings.seed}

    def _client(self, timeout: Timeouts):
        import openai  # only needed once an endpoint is used

        key = next((os.environ[v] for v in KEY_VARIABLES if os.environ.get(v)), "none")  # the client refuses no key at all
        # No retries: a dead server should say so in its pane at once, not after backing off.
        return openai.OpenAI(base_url=self.base_url, api_key=key, max_retries=0,
                             timeout=openai.Timeout(timeout.read, connect=timeout.connect))

    def _user_error(self, exc: Exception, timeout: Timeouts, answered: bool, replying: bool, waited: float) -> UserError:
        """The failure in the visitor's words: which stage it reached (connecting, waiting for
        the answer, mid-reply) decides the sentence."""
        import openai

        host = self.served_by
        up = "is the server up? Start it, or correct HOST:PORT in the model field"
        slow = "the server may be overloaded or still loading: send again, or raise SLERP_ARENA_ENDPOINT_TIMEOUT"
        if isinstance(exc, openai.APITimeoutError):
            # The read timeout cannot fire before `read` seconds have passed, so an earlier one is the connect timeout.
            if not answered and waited < timeout.read:
                return UserError("model", f"could not connect to {host} in {timeout.connect:g} s", up)
            if replying:
                return UserError("model", f"{host} stopped mid-reply: nothing for {timeout.read:g} s", slow)
            return UserError("model", f"{host} did not answer in {timeout.read:g} s", slow)
        if isinstance(exc, openai.APIConnectionError) and not replying:
            cause = re.sub(r"^\[Errno -?\d+\]\s*", "", str(exc.__cause__ or exc)).lower() or "connection failed"
            if answered:
                return UserError("model", f"{host} closed the connection before replying ({cause[:DETAIL_CHARS]})",
                                 "check the server's log, then send again")
            return UserError("model", f"could not connect to {host} ({cause[:DETAIL_CHARS]})", up)
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail = _detail(exc.body) or exc.message
            problem = f"endpoint {self.base_url} answered {status} ({detail[:DETAIL_CHARS]})"
            if status in (401, 403):
                return UserError("model", problem, f"set {KEY_VARIABLES[0]} (or {KEY_VARIABLES[1]}) to a key this server accepts")
            if status == 429:
                return UserError("model", problem, "the server is busy: wait, then send again")
            if status < 500:
                return UserError("model", problem, "check the model name after '#' (the name the server serves it under)")
            return UserError("model", problem, "the server failed: check its log, then send again")
        detail = " ".join(str(exc).split())[:DETAIL_CHARS]
        stage = "failed mid-reply" if replying else "failed before replying"
        return UserError("model", f"{host} {stage} ({exc.__class__.__name__}: {detail})", "check the server's log, then send again")


@dataclass(frozen=True)
class Timeouts:
    """Seconds to connect, and to wait for each piece of the answer (the first token included)."""

    connect: float
    read: float

    @classmethod
    def from_environment(cls) -> Timeouts:
        value = os.environ.get("SLERP_ARENA_ENDPOINT_TIMEOUT", str(DEFAULT_READ_TIMEOUT_S))
        try:
            read = float(value)
        except ValueError:
            read = -1.0
        if not 0 < read < float("inf"):
            raise UserError("SLERP_ARENA_ENDPOINT_TIMEOUT", f"{value!r} is not a number of seconds",
                            f"set it to a positive number, e.g. {DEFAULT_READ_TIMEOUT_S:g}")
        return cls(min(CONNECT_TIMEOUT_S, read), read)


def _detail(body: object) -> str:
    """A server's error text on one line (OpenAI-style {"message": …}, FastAPI {"detail": …})."""
    if isinstance(body, dict):
        body = body.get("message") or body.get("detail") or body.get("error") or ""
    return " ".join(str(body or "").split())
