"""The shared model cache: LRU eviction under a byte budget, busy models kept, one load
per key, requested keys."""

import threading
import time

import pytest

import inference.cache
from core.errors import UserError
from inference import ModelCache
from inference.loading import estimate_load_bytes, load_model


@pytest.fixture
def three(tiny_models):
    refs = [str(tiny_models("llama", seed)) for seed in (1, 2, 3)]
    return refs, estimate_load_bytes(refs[0])


def names(cache: ModelCache) -> list[str]:
    return [m.name for m in cache.loaded()]


def test_a_load_that_does_not_fit_evicts_the_least_recently_used_idle_model(three):
    (a, b, c), size = three
    cache = ModelCache(memory_budget=int(2.6 * size))  # room for two
    cache.get(a, "bf16")
    cache.get(b, "bf16")
    cache.get(a, "bf16")  # a is now the most recently used
    cache.get(c, "bf16")
    assert names(cache) == [a, c]  # b went, not a


def test_a_generating_model_is_never_evicted_and_a_refusal_says_why(three):
    (a, b, c), size = three
    cache = ModelCache(memory_budget=int(2.6 * size))
    first, second = cache.get(a, "bf16"), cache.get(b, "bf16")
    with first.in_use():
        cache.get(c, "bf16")  # a is the LRU but busy: b goes
        assert names(cache) == [a, c]
        with cache.get(c, "bf16").in_use(), pytest.raises(UserError, match=r"after unloading 0 idle model\(s\), and 2 model"):
            cache.get(b, "bf16")
        assert names(cache) == [a, c]  # a refusal evicts nothing
    assert second.busy == 0 and first.busy == 0


def test_concurrent_visitors_load_one_model_once_and_different_models_do_not_wait(three, monkeypatch):
    (a, b, _), _ = three
    calls: list[str] = []
    release_a = threading.Event()

    def slow_load(ref, precision, device, **kwargs):
        calls.append(ref)
        if ref == a:
            assert release_a.wait(30)
        return load_model(ref, precision, device, **kwargs)

    monkeypatch.setattr(inference.cache, "load_model", slow_load)
    cache = ModelCache()
    got: list = []
    visitors = [threading.Thread(target=lambda: got.append(cache.get(a, "int8"))) for _ in range(3)]
    for v in visitors:
        v.start()
    time.sleep(0.3)
    started = time.perf_counter()
    cache.get(b, "int8")  # another model loads while a's load is still held up
    assert time.perf_counter() - started < 20 and calls.count(b) == 1 and not got
    release_a.set()
    for v in visitors:
        v.join(30)
    assert calls.count(a) == 1 and len(got) == 3 and got[0] is got[1] is got[2]


def test_keys_are_the_requested_reference_and_precision(three):
    (a, _, _), _ = three
    cache = ModelCache()
    auto = cache.get(a, "auto")
    assert cache.get(a, "auto") is auto and len(cache.loaded()) == 1
    preview = load_model(a, "bf16")
    cache.add("preview-of-a", "auto", preview)  # stored as asked, whatever "auto" resolved to
    assert cache.get("preview-of-a", "auto") is preview
