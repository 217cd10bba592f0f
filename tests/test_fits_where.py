"""The footprint estimator (inference.loading.estimate_footprint) and the README's
"What fits where" table (inference/capacity.py) that is computed from it."""

import contextlib

import pytest
import torch

from core.errors import UserError
from core.sources import read_config
from inference import ModelCache, capacity
from inference.loading import allowance_of, estimate_footprint, estimate_load_bytes, load_model
from inference.quantize import Hardware

CPU = Hardware.of(torch.device("cpu"))
L4 = next(t for t in capacity.TARGETS if t.label.startswith("L4"))
CPU_BASIC = next(t for t in capacity.TARGETS if t.label.startswith("CPU basic"))


@pytest.mark.parametrize("arch", ["llama", "qwen2"])  # qwen2: tied embeddings, so a quantized lm_head is a copy
@pytest.mark.parametrize("precision", ["bf16", "int8", "fp8"])
def test_the_estimate_from_a_config_is_what_a_load_keeps(tiny_models, arch, precision):
    folder = str(tiny_models(arch, 1))
    estimate = estimate_footprint(read_config(folder), precision, CPU)
    loaded = load_model(folder, precision)
    assert estimate.resident_bytes == loaded.report.weight_bytes
    assert estimate.load_bytes == estimate_load_bytes(folder)
    assert estimate.precision == loaded.report.precision


def test_the_seed_sizes_have_their_published_parameter_counts():
    counts = {size: capacity.footprint(size, "bf16", CPU).load_bytes // 2 for size in capacity.SIZES}
    assert counts == {"Qwen2.5-0.5B": 494_032_768, "Gemma2-2.6B (gemma-2-2b)": 2_614_341_888, "Mistral-7B": 7_241_732_096}


def test_a_7b_does_not_fit_24_gb_three_times_in_bf16_nor_in_int8():
    for merged, parents in [("bf16", "bf16"), ("int8", "int8")]:
        plan = capacity.plan_panes("Mistral-7B", merged, parents, L4)
        one = estimate_footprint(capacity.SIZES["Mistral-7B"], parents, L4.hardware)
        assert plan.parents == one
        # Three int8 7Bs keep 22.5 GB: over the 19.2 GB the guard lets models take of 24 GB.
        assert 3 * one.resident_bytes > 0.8 * L4.memory_bytes
        assert not plan.fits
    assert capacity.cell(capacity.best_fit("Mistral-7B", L4)).startswith("does not fit (even int8 + 2× int8, 22.5 GB")


def test_a_0_5b_fits_cpu_basic_with_the_parents_in_bf16():
    plan = capacity.best_fit("Qwen2.5-0.5B", CPU_BASIC)
    merged = estimate_footprint(capacity.SIZES["Qwen2.5-0.5B"], "int8", CPU)
    parent = estimate_footprint(capacity.SIZES["Qwen2.5-0.5B"], "bf16", CPU)
    assert plan.fits and plan.label() == "int8 + 2× bf16"
    assert plan.total_bytes == merged.resident_bytes + 2 * parent.resident_bytes
    assert capacity.cell(plan) == f"int8 + 2× bf16: {plan.total_bytes / 1e9:.1f} GB"


def test_the_table_follows_the_model_cache_on_real_loads(tiny_models, monkeypatch):
    """plan_panes replays what ModelCache does: with its memory budget set to the table's
    limit, the cache loads the three panes exactly when the table says they fit."""
    refs = [str(tiny_models("llama", seed)) for seed in (1, 2, 3)]
    monkeypatch.setitem(capacity.SIZES, "tiny", read_config(refs[0]))
    bf16 = estimate_footprint(read_config(refs[0]), "bf16", CPU)
    int8 = estimate_footprint(read_config(refs[0]), "int8", CPU)
    # Memories either side of the third load: Merged (int8) and Parent A (bf16) stay, Parent B loads.
    third_load = int8.resident_bytes + bf16.resident_bytes + bf16.load_bytes
    for memory, fits in [(int(third_load / 0.8) + 10, True), (int(third_load / 0.8) - 10, False)]:
        target = capacity.Target("tiny", memory, CPU, 0)
        assert capacity.plan_panes("tiny", "int8", "bf16", target).fits is fits
        cache = ModelCache(memory_budget=allowance_of(memory, memory))  # what the guard lets models take of an empty memory
        with contextlib.ExitStack() as panes:  # busy panes: the cache may not evict them
            try:
                for ref, precision in zip(refs, ["int8", "bf16", "bf16"], strict=True):
                    panes.enter_context(cache.get(ref, precision).in_use())
                loaded_all = True
            except UserError:
                loaded_all = False
        assert loaded_all is fits


def test_the_notes_say_each_seed_size_chats_on_its_familys_path():
    """fits-where reads the family descriptions: each seed size on the lean loop, which now runs Gemma2."""
    notes = capacity.footnotes()
    assert "Gemma2-2.6B: Gemma2, the lean decode loop" in notes and "Mistral-7B: Mistral, the lean decode loop" in notes
