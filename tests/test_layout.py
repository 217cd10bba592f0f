"""The architecture as the imports show it: core <- engines <- arena / evaluation <- ui
<- app, the engines never importing each other, gradio only in ui/ and app.py, no
sys.path edits, and tests and benchmarks sharing helpers only through testkit/."""

import ast
from pathlib import Path

from core.places import ROOT

PACKAGES = ("core", "merging", "inference", "arena", "evaluation", "ui", "testkit", "app")
# Which project packages each one may import.
ALLOWED = {
    "core": set(),
    "merging": {"core"},
    "inference": {"core"},
    "arena": {"core", "merging", "inference"},
    "evaluation": {"core", "merging", "inference"},
    "testkit": {"core", "merging", "inference", "evaluation"},  # test helpers: above every layer they build with
    "ui": {"core", "merging", "inference", "arena", "evaluation"},
    "app": {"core", "merging", "inference", "arena", "evaluation", "ui"},
    "tests": {"core", "merging", "inference", "arena", "evaluation", "ui", "app", "testkit"},
    "benchmarks": {"core", "merging", "inference", "arena", "evaluation", "testkit"},
}
WITH_GRADIO = {"ui", "app", "tests"}


def python_files() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if not any(part.startswith(".") for part in p.relative_to(ROOT).parts))


def imports_of(file: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def layer_of(file: Path) -> str:
    return file.relative_to(ROOT).parts[0].removesuffix(".py")


def test_every_python_file_sits_in_a_package_and_app_py_is_the_only_top_level_module():
    layers = {layer_of(f) for f in python_files()}
    assert layers <= set(ALLOWED), layers - set(ALLOWED)


def test_imports_follow_the_layers():
    wrong = []
    for file in python_files():
        layer = layer_of(file)
        used = imports_of(file)
        project = used & {*PACKAGES, "tests", "benchmarks", "helpers", "conftest"}
        local = {"helpers", "conftest"} if layer == "tests" else set()
        wrong += [f"{file.relative_to(ROOT)} imports {name}" for name in project - ALLOWED[layer] - {layer} - local]
        if "gradio" in used and layer not in WITH_GRADIO:
            wrong.append(f"{file.relative_to(ROOT)} imports gradio")
    assert not wrong, "\n".join(wrong)


def edits_sys_path(file: Path) -> bool:
    """A call of sys.path.<anything> (insert, append, extend)."""
    return any(isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "path"
               and isinstance(node.value.value, ast.Name) and node.value.value.id == "sys"
               for node in ast.walk(ast.parse(file.read_text())))


def test_nothing_edits_sys_path():
    edits = [f.relative_to(ROOT) for f in python_files() if edits_sys_path(f)]
    assert not edits, edits
