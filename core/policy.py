"""Public mode: what strangers on a shared Space may point the app at.

On by default when running on a Space (`SPACE_ID` set); `SLERP_ARENA_PUBLIC=1` / `=0`
forces it on / off. In public mode:
- a local path (model or output) must resolve — symlinks followed, `..` collapsed —
  inside an allow-listed root (the models root and the outputs root); Hub ids and the
  bundled model are always allowed;
- an endpoint (`http(s)://HOST:PORT/v1#MODEL`) must be one the owner listed in
  `SLERP_ARENA_ENDPOINTS` (comma-separated base URLs): otherwise a visitor could make the
  Space send requests, and its API key, to any address it can reach;
- the two parents together may not exceed a size limit, and merges may not push the
  outputs folder past a disk quota;
- a chat message may not make a prompt longer than SLERP_ARENA_MAX_PROMPT_TOKENS
  (PUBLIC_PROMPT_TOKENS by default): one visitor's long prefill holds the CPU for all.
Pickle checkpoints are never loaded by the merge (safetensors only) and
`trust_remote_code` is never set, in either mode.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core.errors import UserError
from core.places import models_root, outputs_root
from core.sources import base_url_of, endpoint_of, kind_of

GB = 10**9
PUBLIC_PROMPT_TOKENS = 4096


@dataclass(frozen=True)
class AccessPolicy:
    model_roots: tuple[Path, ...]
    output_root: Path
    max_parents_bytes: int = 20 * GB
    output_quota_bytes: int = 50 * GB
    endpoints: tuple[str, ...] = ()  # base URLs visitors may chat through

    def check_model(self, ref: str) -> None:
        ref = ref.strip()
        if not ref:  # else it resolves to the server's working folder, and the refusal names server paths
            raise UserError("model", "empty", "type a Hub id such as org/name, or pick a model from the list")
        try:
            kind = kind_of(ref)
        except UserError:
            kind = None  # not a model reference at all; if it names a path outside the roots, say that first
        if kind in ("bundled", "hub"):
            return  # the same rule resolve_model uses: a local folder of that name wins over a Hub id
        if kind == "endpoint":
            self._listed(endpoint_of(ref).base_url)
            return
        self._inside(Path(ref).expanduser(), (*self.model_roots, self.output_root), "model", ref)

    def _listed(self, base_url: str) -> None:
        allowed = [base_url_of(url) for url in self.endpoints]
        if base_url not in allowed:
            fix = f"use one of: {', '.join(allowed)}" if allowed else "use a Hub id (this Space allows no endpoints)"
            raise UserError("model", f"endpoint {base_url} is not on this Space's allow-list (SLERP_ARENA_ENDPOINTS)", fix)

    def check_output(self, output: Path) -> None:
        self._inside(output, (self.output_root,), "output", str(output))

    def check_sizes(self, parents_bytes: int, output_bytes: int) -> None:
        if parents_bytes > self.max_parents_bytes:
            raise UserError("models", f"the parents take {parents_bytes / GB:.1f} GB; this Space merges at most "
                             f"{self.max_parents_bytes / GB:.0f} GB", "pick smaller models or run the merge locally")
        used = sum(f.stat().st_size for f in self.output_root.rglob("*") if f.is_file()) if self.output_root.is_dir() else 0
        if used + output_bytes > self.output_quota_bytes:
            raise UserError("output", f"the outputs folder would grow to {(used + output_bytes) / GB:.1f} GB, over its "
                             f"{self.output_quota_bytes / GB:.0f} GB quota", "delete earlier merges first")

    @staticmethod
    def _inside(path: Path, roots: tuple[Path, ...], field: str, shown: str) -> None:
        real = path.expanduser().resolve()
        if not any(real.is_relative_to(root.expanduser().resolve()) for root in roots):
            allowed = ", ".join(f"{r.name}/" for r in roots)  # by name: a visitor never sees the server's paths
            raise UserError(field, f"'{shown}' is outside the folders this app may use", f"use a Hub id or a path under {allowed}")


def public_mode() -> bool:
    forced = os.environ.get("SLERP_ARENA_PUBLIC")
    if forced is not None:
        return forced.strip().lower() in ("1", "true", "yes", "on")
    return bool(os.environ.get("SPACE_ID"))


def max_prompt_tokens() -> int | None:
    """The longest prompt a message may make (tokens, in any pane's chat template), or None
    for no limit but the models' contexts: the owner's own app, unless they set one."""
    value = os.environ.get("SLERP_ARENA_MAX_PROMPT_TOKENS", "")
    if value.strip():
        try:
            tokens = int(value)
        except ValueError:
            tokens = -1
        if tokens < 0:
            raise UserError("SLERP_ARENA_MAX_PROMPT_TOKENS", f"{value!r} is not a whole number of tokens",
                            f"set it to a number such as {PUBLIC_PROMPT_TOKENS}, or 0 for no limit")
        return tokens or None
    return PUBLIC_PROMPT_TOKENS if public_mode() else None


def policy_from_env(model_roots: tuple[Path, ...], output_root: Path) -> AccessPolicy | None:
    """The public-mode policy, or None where the app runs for its owner only."""
    if not public_mode():
        return None
    return AccessPolicy(model_roots, output_root,
                        max_parents_bytes=int(float(os.environ.get("SLERP_ARENA_MAX_PARENTS_GB", 20)) * GB),
                        output_quota_bytes=int(float(os.environ.get("SLERP_ARENA_OUTPUT_QUOTA_GB", 50)) * GB),
                        endpoints=tuple(url.strip() for url in os.environ.get("SLERP_ARENA_ENDPOINTS", "").split(",") if url.strip()))


def access_policy() -> AccessPolicy | None:
    """Public mode (on a Space, or SLERP_ARENA_PUBLIC=1): local paths only under the roots."""
    return policy_from_env((models_root(),), outputs_root())


def check_models(*refs: str) -> None:
    """Raise the policy's UserError for the first reference a visitor may not use."""
    if (policy := access_policy()) is not None:
        for ref in refs:
            policy.check_model(ref)
