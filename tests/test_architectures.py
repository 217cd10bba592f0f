"""Each family is described once (core/architectures.py): no other module of the app lists
families or branches on one, and every part reads the description."""

import ast
from pathlib import Path

from core.architectures import FAMILIES, GENERIC, family_of
from core.places import ROOT

APP_PACKAGES = ("core", "merging", "inference", "arena", "evaluation", "ui")
NAMES = {name.lower() for family in FAMILIES for name in (family.name, *family.model_types)}


def app_files() -> list[Path]:
    files = [ROOT / "app.py", *(p for package in APP_PACKAGES for p in (ROOT / package).rglob("*.py"))]
    return [f for f in files if f != ROOT / "core" / "architectures.py"]


def family_strings(nodes: list[ast.AST]) -> list[str]:
    return [n.value for n in nodes if isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value.lower() in NAMES]


def naming(tree: ast.AST) -> list[str]:
    """Lists, tuples, sets and dict keys with two or more family names, and comparisons with one."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.List | ast.Tuple | ast.Set) and len(family_strings(node.elts)) >= 2:
            found.append(f"line {node.lineno}: {family_strings(node.elts)}")
        elif isinstance(node, ast.Dict) and len(family_strings(node.keys)) >= 2:
            found.append(f"line {node.lineno}: {family_strings(node.keys)}")
        elif isinstance(node, ast.Compare) and family_strings([node.left, *node.comparators]):
            found.append(f"line {node.lineno}: compares with {family_strings([node.left, *node.comparators])}")
    return found


def test_no_family_is_named_in_a_list_outside_its_description():
    wrong = {str(f.relative_to(ROOT)): hits for f in app_files() if (hits := naming(ast.parse(f.read_text(), str(f))))}
    assert not wrong, wrong


def test_the_grep_finds_a_list_of_families_and_a_branch_on_one():
    """The check itself: the old decoder's list and a branch on a model_type are found."""
    assert naming(ast.parse('SUPPORTED_TYPES = ("llama", "mistral", "qwen2")'))
    assert naming(ast.parse('if config.model_type == "gemma2": pass'))
    assert not naming(ast.parse('SIZES = {"Qwen2.5-0.5B": dict(model_type="qwen2")}'))


def test_each_seed_family_has_one_description_and_an_unknown_type_gets_the_generic_one():
    types = [t for family in FAMILIES for t in family.model_types]
    assert len(types) == len(set(types))
    assert [family_of(t).name for t in ("llama", "mistral", "gemma2", "qwen2")] == ["Llama", "Mistral", "Gemma2", "Qwen2"]
    assert family_of("not-a-model") is GENERIC and family_of(["llama"]) is GENERIC and not GENERIC.lean
