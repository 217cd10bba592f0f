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


# Module-level state the app keeps, each with why it is the process's and not an object's.
# Everything else on the chat path lives in an owner: a session, a round, the model cache,
# a loaded model, its decoder and scheduler, the cache's Cores.
PROCESS_STATE = {
    "inference/cache.py:MODELS": "the root owner, the process's models: a forked ZeroGPU worker finds them through it",
    "inference/cpu_kernels.py:_kernel": "the C library this CPU runs, built once per process",
    "inference/cpu_kernels.py:_kernel_lock": "guards _kernel",
    "inference/cpu_kernels.py:_choices": "which product is faster on this CPU, measured once per shape",
    "inference/cpu_kernels.py:_choices_lock": "guards _choices",
    "merging/slerp_kernel.py:_lib": "the SLERP C library this CPU runs, built once per process",
    "merging/slerp_kernel.py:_lock": "guards _lib",
    "core/native.py:_said": "build notes logged once per process",
    "core/native.py:_failed": "builds that failed, not tried again in this process",
    "core/sources.py:_conversion_lock": "one GGUF conversion at a time in the process",
    "core/zerogpu.py:_wrapped": "spaces.GPU wrappers, built once per function, as spaces expects",
    "core/hub_access.py:_allowed": "the Hub's recent answers on gated repos, shared by the process's visitors",
    "arena/votes.py:_app_stores": "one vote store per file, so the process's writers share its lock",
    "arena/votes.py:_app_stores_lock": "guards _app_stores",
}
STATEFUL_CALLS = {"Lock", "RLock", "Condition", "Event", "local", "WeakKeyDictionary", "WeakValueDictionary", "OrderedDict",
                  "defaultdict", "deque", "dict", "list", "set", "ModelCache"}


def module_state(file: Path) -> set[str]:
    """Names a module binds to something mutable, or rebinds through `global`."""
    tree = ast.parse(file.read_text(), str(file))
    names = {name for node in ast.walk(tree) if isinstance(node, ast.Global) for name in node.names}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        value = getattr(node, "value", None)
        called = isinstance(value, ast.Call) and getattr(value.func, "attr", getattr(value.func, "id", None)) in STATEFUL_CALLS
        container = isinstance(value, (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp))
        for target in targets:
            name = getattr(target, "id", "")
            if name.startswith("__"):
                continue
            if called or (container and not name.isupper()):  # an upper-case literal is a table, read only
                names.add(name)
    return names


def test_the_app_keeps_no_module_state_beyond_the_process_s_own():
    found = {f"{file.relative_to(ROOT)}:{name}" for package in ("core", "merging", "inference", "arena", "evaluation", "ui")
             for file in (ROOT / package).rglob("*.py") for name in module_state(file)}
    found |= {f"app.py:{name}" for name in module_state(ROOT / "app.py")}
    assert found == set(PROCESS_STATE), (sorted(found - set(PROCESS_STATE)), sorted(set(PROCESS_STATE) - found))
