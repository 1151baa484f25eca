"""The package's parts import downwards only (docs/architecture.md): a module knows the parts
below it, never one above it, and no module outside the command layer hides a clibd import
inside a function (that is how an upward import dodges a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "clibd"
# Bottom to top: each part may import itself and the parts before it.
PARTS = ("core", "data", "models", "embed", "index", "eval", "train", "serve", "commands")
CORE = {"clibd", "clibd.config", "clibd.taxonomy", "clibd.atomic", "clibd.progress"}
COMMAND_MODULES = {"clibd.cli"}


def part_of(module: str) -> str:
    if module in CORE:
        return "core"
    if module in COMMAND_MODULES:
        return "commands"
    part = module.split(".")[1]
    if part not in PARTS:
        raise AssertionError(f"{module} belongs to no part of {PARTS}: add it to docs/architecture.md and here")
    return part


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def clibd_imports(tree: ast.AST) -> list[tuple[ast.AST, str]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "clibd":
            found.append((node, node.module))
        elif isinstance(node, ast.Import):
            found += [(node, a.name) for a in node.names if a.name.split(".")[0] == "clibd"]
    return found


def function_level(tree: ast.AST) -> set[int]:
    """ids of the import nodes that sit inside a function body."""
    inside = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside |= {id(n) for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
    return inside


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_in_a_part() -> None:
    assert {part_of(module_name(p)) for p in MODULES} == set(PARTS)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_run_downwards(path: Path) -> None:
    module = module_name(path)
    level = PARTS.index(part_of(module))
    tree = ast.parse(path.read_text())
    upward = [name for _, name in clibd_imports(tree) if PARTS.index(part_of(name)) > level]
    assert not upward, f"{module} ({PARTS[level]}) imports from a part above it: {upward}"


# Commands import lazily so `clibd --help` does not load torch.
BELOW_COMMANDS = [p for p in MODULES if part_of(module_name(p)) != "commands"]


@pytest.mark.parametrize("path", BELOW_COMMANDS, ids=lambda p: module_name(p))
def test_no_clibd_import_hides_in_a_function(path: Path) -> None:
    module = module_name(path)
    tree = ast.parse(path.read_text())
    inside = function_level(tree)
    hidden = [f"line {node.lineno}: {name}" for node, name in clibd_imports(tree) if id(node) in inside]
    assert not hidden, f"{module} imports clibd modules inside functions: {hidden}"


# Below commands/, modules are imported by name at run time only by the tower registry (start-up:
# each tower's libraries load with that tower, docs/architecture.md) and the package's public names.
RUNTIME_IMPORTERS = {"clibd.models.registry", "clibd"}


def runtime_imports(tree: ast.AST) -> list[int]:
    """Lines that call ``import_module`` / ``__import__``."""
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    names = [getattr(call.func, "attr", getattr(call.func, "id", None)) for call in calls]
    return [call.lineno for call, name in zip(calls, names) if name in ("import_module", "__import__")]


def test_modules_are_imported_by_name_only_in_the_tower_registry() -> None:
    found = {module_name(p): runtime_imports(ast.parse(p.read_text())) for p in BELOW_COMMANDS}
    hidden = {module: lines for module, lines in found.items() if lines and module not in RUNTIME_IMPORTERS}
    assert not hidden, f"import a module by name only through clibd.models.registry: {hidden}"


def test_the_tower_registry_names_what_models_or_below_define() -> None:
    from clibd.models import registry

    for part, target in registry.PARTS.items():
        module, attribute = target.split(":")
        assert PARTS.index(part_of(module)) <= PARTS.index("models"), f"{part}: {module} sits above models/"
        tree = ast.parse((PACKAGE.parent / (module.replace(".", "/") + ".py")).read_text())
        defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        assert attribute in defined, f"{part}: {module} defines no {attribute}"


REPO = PACKAGE.parent
# What a user's clone holds: it must not point at files only this workspace has.
PRODUCT_FILES = sorted(
    [
        p
        for folder in ("clibd", "configs", "docs")
        for p in (REPO / folder).rglob("*")
        if p.is_file() and p.suffix != ".pyc"
    ]
    + [REPO / name for name in ("README.md", "train.py", "eval.py", "Makefile", "pyproject.toml", "environment.yml")]
)


@pytest.mark.parametrize("path", PRODUCT_FILES, ids=lambda p: str(p.relative_to(REPO)))
def test_product_files_cite_no_workspace_file(path: Path) -> None:
    text = path.read_text(errors="replace")
    cited = [word for word in ("REFERENCE.md", "DESIGN.md", "../shared") if word in text]
    assert not cited, f"{path.relative_to(REPO)} cites {cited}: put the facts it relies on in docs/"


def _function_lengths() -> list[tuple[int, str]]:
    lengths = []
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lengths.append((node.end_lineno - node.lineno + 1, f"{module_name(path)}.{node.name}"))
    return lengths


def test_no_function_over_80_lines() -> None:
    """Functions read top to bottom in one screen or so (the training loop was 189 lines once)."""
    long = sorted((n, name) for n, name in _function_lengths() if n > 80)
    assert not long, f"functions over 80 lines: {long}"


def test_evaluation_knows_nothing_of_training() -> None:
    """Evaluators are built and run by training, eval.py and the commands alike: eval/ never
    reaches into train/ (the part order forbids it too; this says it by name)."""
    for path in (PACKAGE / "eval").rglob("*.py"):
        names = [name for _, name in clibd_imports(ast.parse(path.read_text()))]
        assert not [n for n in names if n.startswith("clibd.train")], f"{module_name(path)} imports {names}"


def test_training_loop_holds_only_the_loop() -> None:
    """Validation, export, the step log and the set-up live beside the loop, not in it."""
    lines = len((PACKAGE / "train" / "loop.py").read_text().splitlines())
    assert lines < 250, f"clibd/train/loop.py has {lines} lines: move what is not the loop to its own module"
