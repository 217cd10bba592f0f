"""ZeroGPU: handlers are wrapped in spaces.GPU only on ZeroGPU hardware."""

import sys
import types

from ui import zerogpu


def handler(x):
    return x + 1


def test_nothing_changes_off_zerogpu(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert zerogpu.gpu(60)(handler) is handler and not zerogpu.on_zerogpu()


def test_on_zerogpu_handlers_run_inside_spaces_gpu_with_their_duration(monkeypatch):
    calls = []
    fake = types.ModuleType("spaces")
    fake.__spec__ = types.SimpleNamespace(name="spaces")

    def gpu_decorator(duration):
        def wrap(fn):
            def inside(*args):
                calls.append(duration)
                return fn(*args)
            return inside
        return wrap

    fake.GPU = gpu_decorator
    monkeypatch.setitem(sys.modules, "spaces", fake)
    monkeypatch.setattr(zerogpu.importlib.util, "find_spec", lambda name: object() if name == "spaces" else None)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    wrapped = zerogpu.gpu(zerogpu.CHAT_SECONDS)(handler)
    assert wrapped is not handler and wrapped(1) == 2 and calls == [zerogpu.CHAT_SECONDS]
    monkeypatch.setenv("SPACES_ZERO_GPU", "")
    assert zerogpu.gpu(zerogpu.CHAT_SECONDS)(handler) is handler  # `spaces` installed, but not ZeroGPU hardware
