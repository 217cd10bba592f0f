"""The locks: what the Space installs is what the tests ran, every package pinned and
hashed, and the dev lock the runtime lock plus the test tools. (`make install` checks the
venv against the dev lock, `make lock-check` the locks against their inputs.)"""

import ast
import re
from pathlib import Path

import pytest
from packaging.markers import Marker

from testkit import locks

ROOT = Path(__file__).resolve().parent.parent
RUNTIME, DEV = ROOT / "requirements.txt", ROOT / "requirements-dev.txt"
# The Space's environment (README front matter: python_version; Linux x86_64), where the
# runtime lock's markers are evaluated, and these machines'.
SPACE = {"python_version": "3.12", "python_full_version": "3.12.12", "sys_platform": "linux", "platform_system": "Linux",
         "platform_machine": "x86_64", "implementation_name": "cpython", "platform_python_implementation": "CPython",
         "os_name": "posix"}
HERE = {**SPACE, "python_version": "3.11", "python_full_version": "3.11.7"}


def front_matter(key: str) -> str:
    match = re.search(rf"^{key}:\s*\"?([^\"\n]+)\"?$", (ROOT / "README.md").read_text().split("\n---\n")[0], re.M)
    assert match, f"README front matter has no {key}"
    return match[1].strip()


def applies(pin: locks.Pin, environment: dict) -> bool:
    return pin.marker is None or Marker(pin.marker).evaluate(environment)


def test_the_locked_gradio_is_the_one_the_space_runs():
    # Hugging Face installs gradio[oauth]==sdk_version after requirements.txt: any other pin is replaced there.
    sdk = front_matter("sdk_version")
    assert locks.read(RUNTIME)["gradio"].version == sdk and locks.read(DEV)["gradio"].version == sdk


def test_every_package_is_pinned_with_its_hashes():
    for path in (RUNTIME, DEV):
        pins = locks.read(path)
        assert len(pins) > 50, path  # the transitive packages too, not only the direct ones
        unhashed = [name for name, pin in pins.items() if pin.hashes == 0]
        assert unhashed == [], f"{path.name}: no hash for {unhashed}"


def test_the_dev_lock_is_the_runtime_lock_plus_the_test_tools():
    runtime, dev = locks.read(RUNTIME), locks.read(DEV)
    moved = {name: (pin.version, dev[name].version) for name, pin in runtime.items()
             if name in dev and pin.version != dev[name].version.split("+")[0]}
    assert moved == {}, f"the dev lock moved the runtime lock's pins: {moved}"
    assert dev["torch"].version == runtime["torch"].version + "+cpu"
    # What the machines here leave out is the CUDA runtime of PyPI's torch build, and nothing else:
    # every runtime package that applies here and is missing is required only by torch or by such packages.
    missing = {name for name, pin in runtime.items() if applies(pin, HERE) and name not in dev}
    assert missing and all(set(runtime[name].via) <= missing | {"torch"} for name in missing), \
        {name: runtime[name].via for name in missing}


@pytest.mark.parametrize("environment", [SPACE, HERE], ids=["space-3.12", "here-3.11"])
def test_the_runtime_lock_has_one_version_of_each_package_for_the_space_and_here(environment):
    # One resolution for both Pythons: CI's 3.11 tests the versions the Space's 3.12 runs.
    names = [line.split("==")[0] for line in RUNTIME.read_text().splitlines() if re.match(r"^[a-z0-9]", line)]
    assert len(names) == len(set(names)), "a package is locked at two versions (forked by a marker)"
    applying = [name for name, pin in locks.read(RUNTIME).items() if applies(pin, environment)]
    assert {"torch", "gradio", "transformers", "openai", "huggingface-hub"} <= set(applying)


def test_the_reader_refuses_a_line_that_is_not_a_pin(tmp_path):
    lock = tmp_path / "requirements.txt"
    lock.write_text("gradio==6.31.0 \\\n    --hash=sha256:00\n    # via -r requirements.in\nopenai>=3\n")
    with pytest.raises(ValueError, match="requirements.txt:4: not a pin, a hash or a comment: openai>=3"):
        locks.read(lock)


def test_no_module_imports_an_http_library_a_dependency_owns():
    # openai and huggingface_hub each own their HTTP library (httpx2 today, httpx before): its
    # types come through their public API (openai.Timeout) or not at all.
    owned = {"httpx", "httpx2", "httpcore", "httpcore2"}
    found = []
    for path in [ROOT / "app.py", *(p for folder in ("core", "merging", "inference", "arena", "evaluation", "ui", "testkit",
                                                       "benchmarks") for p in (ROOT / folder).rglob("*.py"))]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.relative_to(ROOT)}:{node.lineno} {name}" for name in names if name.split(".")[0] in owned]
    assert found == []
