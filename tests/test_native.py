"""core/native.py: libraries built per instruction-set target, keyed on what the compiler
targets, and every way a build can fail ends in torch with one line saying why."""

import pytest

from core import native

pytestmark = pytest.mark.skipif(not native.supported_targets(), reason="no AVX2 target on this machine: torch only")
ANSWER = "int answer(void) { return 42; }\n"


@pytest.fixture
def kernels(tmp_path, monkeypatch):
    """A private cache, no SLERP_ARENA_KERNELS, and no reason said yet."""
    monkeypatch.setenv("SLERP_ARENA_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(native.KERNELS_ENV, raising=False)
    monkeypatch.setattr(native, "_said", set())
    monkeypatch.setattr(native, "_failed", set())
    source = tmp_path / "answer.c"
    source.write_text(ANSWER)
    return source


def test_each_target_and_compiler_version_has_its_own_library(kernels, monkeypatch):
    built = {target: native.build("answer", [kernels], [], target) for target in native.supported_targets()}
    assert all(lib.answer() == 42 for lib in built.values())
    names = [lib._name for lib in built.values()]
    assert len(set(names)) == len(names) and all(f"answer-{t}-" in n for t, n in zip(built, names, strict=True))
    target = native.supported_targets()[0]
    macros = native._macros
    monkeypatch.setattr(native, "_macros", lambda compiler, flags: (True, macros(compiler, flags)[1] + '#define __VERSION__ "99"\n'))
    assert native.build("answer", [kernels], [], target)._name != built[target]._name  # an upgraded compiler builds again


def test_a_failed_build_says_why_once_and_falls_back(kernels, capsys):
    kernels.write_text("int answer(void) { return 42 }\n")  # a missing semicolon
    assert native.build("answer", [kernels], []) is None
    assert native.build("answer", [kernels], []) is None
    said = capsys.readouterr().err
    assert said.count("failed to build") == 1 and "answer.c:1:" in said and "expected" in said and "torch runs instead" in said


def test_a_hung_compiler_is_stopped(kernels, tmp_path, monkeypatch, capsys):
    slow = tmp_path / "slow-cc"
    slow.write_text("#!/bin/sh\nsleep 30\n")
    slow.chmod(0o755)
    monkeypatch.setenv("CC", str(slow))
    monkeypatch.setattr(native, "COMPILE_TIMEOUT_S", 1)
    assert native.build("answer", [kernels], []) is None
    assert "timed out after 1 s" in capsys.readouterr().err


def test_code_for_instruction_sets_this_cpu_lacks_is_never_loaded(kernels, monkeypatch, capsys):
    """As on a VM that hides AVX-512 from /proc/cpuinfo while the compiler still sees it."""
    monkeypatch.setattr(native, "cpu_flags", lambda: frozenset({"avx2", "fma", "f16c"}))
    if "avx512f" not in native._macros(native._compiler(), ("-O3", "-march=native"))[1].lower():
        pytest.skip("the compiler targets no AVX-512 here")
    assert native.supported_targets() == ["avx2"] and native.chosen_target() == "avx2"
    assert native.build("answer", [kernels], [], "avx512") is None
    assert "which this CPU lacks" in capsys.readouterr().err
    assert native.build("answer", [kernels], []).answer() == 42  # the avx2 build runs


def test_torch_only_builds_nothing(kernels, monkeypatch):
    monkeypatch.setenv(native.KERNELS_ENV, "torch")
    assert native.chosen_target() is None and native.build("answer", [kernels], []) is None
    monkeypatch.setenv(native.KERNELS_ENV, "avx2")
    assert native.chosen_target() == "avx2"
