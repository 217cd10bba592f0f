"""The models every visitor shares: each (reference, precision) is loaded once, and a load
that does not fit evicts idle models, least recently used first.

- Keys are what was *requested* ("auto" stays "auto"), so every lookup finds what was
  stored, whatever "auto" resolves to on this device.
- A model that is generating (`LoadedModel.busy`) is never evicted; a load is refused
  only when evicting every idle model would still not make room, and the message says so.
- Loads of the same key by concurrent visitors happen once (a per-key lock); loads of
  different keys run side by side, each reserving its bytes while it loads.
- Room is counted from the models' own sizes, so the rule can be tested with a small
  byte budget; without a budget the guard's allowance (free memory less 20%) is used.
- An endpoint reference is not loaded, counted or kept: its weights live on its server.
"""

from __future__ import annotations

import gc
import threading
from collections import OrderedDict

import torch

from core.errors import UserError
from core.sources import kind_of
from inference.endpoint import EndpointModel
from inference.loading import LoadedModel, detect_device, estimate_load_bytes, guard_allowance, load_model
from inference.sharing import Cores

Key = tuple[str, str]  # (reference, requested precision)


class ModelCache:
    def __init__(self, device: torch.device | None = None, memory_budget: int | None = None):
        """`memory_budget`: bytes all cached models may take together (None: the memory guard)."""
        self._device = device
        self.memory_budget = memory_budget
        self._models: OrderedDict[Key, LoadedModel] = OrderedDict()  # least recently used first
        self._key_locks: dict[Key, threading.Lock] = {}
        self._reserved = 0  # bytes of loads in progress
        self._lock = threading.Lock()
        self.cores = Cores()  # its models' replies share the process's cores: prompts one at a time (sharing.py)

    @property
    def device(self) -> torch.device:
        """Decided at the first load, not at import: on ZeroGPU `spaces` is imported at the
        app's start (core.zerogpu.start), and only then does `cuda` answer."""
        if self._device is None:
            self._device = detect_device()
        return self._device

    def get(self, ref: str, precision: str = "auto") -> LoadedModel | EndpointModel:
        key = (ref, precision)
        with self._lock:
            if (found := self._lookup(key)) is not None:
                return found  # looked up first: a t-preview's name ("folder#t=…") is no reference kind_of knows
        if kind_of(ref) == "endpoint":
            return EndpointModel.of(ref)
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # a second visitor asking for the same model waits for the first load
            with self._lock:
                if (found := self._lookup(key)) is not None:
                    return found
            needed = estimate_load_bytes(ref)
            self._make_room(ref, needed)
            try:
                loaded = load_model(ref, precision, self.device, check_memory=False, cores=self.cores)
            except BaseException:
                self._release()  # a refused load (a stranger's NaN weights) gives back what it took
                raise
            finally:
                with self._lock:
                    self._reserved -= needed
            with self._lock:
                self._models[key] = loaded
            return loaded

    def peek(self, ref: str, precision: str = "auto") -> LoadedModel | None:
        """The model if it is loaded, without loading it or touching its place in the LRU order."""
        with self._lock:
            return self._models.get((ref, precision))

    def add(self, ref: str, precision: str, loaded: LoadedModel) -> None:
        """Register a model built in memory (a t-preview, with this cache's `cores`) under the precision it was asked in."""
        with self._lock:
            self._models[(ref, precision)] = loaded

    def unload(self, loaded: LoadedModel) -> None:
        with self._lock:
            for key in [k for k, v in self._models.items() if v is loaded]:
                del self._models[key]
        self._release()

    def loaded(self) -> list[LoadedModel]:
        """Least recently used first."""
        with self._lock:
            return list(self._models.values())

    def _lookup(self, key: Key) -> LoadedModel | None:
        found = self._models.get(key)
        if found is not None:
            self._models.move_to_end(key)
        return found

    def _allowance(self) -> int:
        if self.memory_budget is not None:
            return self.memory_budget - sum(m.report.weight_bytes for m in self._models.values()) - self._reserved
        return guard_allowance(self.device) - self._reserved

    def _make_room(self, ref: str, needed: int) -> None:
        """Evict idle models (LRU first) until `needed` bytes fit, then reserve them."""
        with self._lock:
            allowance = self._allowance()
            idle = [(k, m) for k, m in self._models.items() if m.busy == 0]
            freeable = sum(m.report.weight_bytes for _, m in idle)
            if needed > allowance + freeable:
                busy = len(self._models) - len(idle)
                raise UserError("model", f"'{ref}' needs about {needed / 1e9:.2f} GB to load; {max(allowance + freeable, 0) / 1e9:.2f} GB "
                                f"may be used even after unloading {len(idle)} idle model(s), and {busy} model(s) are busy generating",
                                "wait for the other chats to finish, or pick a smaller model")
            evicted = 0
            for key, model in idle:
                if needed <= allowance:
                    break
                del self._models[key]
                allowance += model.report.weight_bytes
                evicted += 1
            self._reserved += needed
        if evicted:
            self._release()

    def _release(self) -> None:
        gc.collect()  # evicted models may hold reference cycles (hooks, tied weights)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


MODELS = ModelCache()  # the process's one cache, shared by every visitor: each (model, precision) is loaded once
