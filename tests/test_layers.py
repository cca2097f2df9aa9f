"""The package's layers follow the data flow, and imports only run down them.

data < models < cache < methods < stats < runs < interop < reports < cli: a module may import
its own layer and the layers below, never one above, and no two modules import each other in a
cycle. The imports are read from the source (every ``import``, including those inside
functions), so an import placed in a function to dodge a cycle is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tcs_fewshot"
# Modules every layer may use: errors, checksums and the documented defaults.
SHARED = {"errors", "checksums", "defaults"}
LAYERS = ["data", "models", "cache", "methods", "stats", "runs", "interop", "reports", "cli"]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """The ``tcs_fewshot`` modules ``path`` imports (``from a import b`` counts ``a.b`` when it is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("tcs_fewshot"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tcs_fewshot") and not node.level:
            found.add(node.module)
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                if module_file(candidate) is not None:
                    found.add(candidate)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: use absolute imports (a relative one hides which layer it reaches)")
    return found


def module_file(name: str) -> Path | None:
    relative = Path(*name.split(".")[1:])
    for candidate in (PACKAGE / relative.with_suffix(".py"), PACKAGE / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def layer(name: str) -> int | None:
    """The layer index of a module; ``None`` for the shared modules and the package's public API."""
    parts = name.split(".")
    if len(parts) == 1 or parts[1] in SHARED or parts[1] == "manifests":
        return None
    return LAYERS.index(parts[1])


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py") if "manifests" not in path.relative_to(PACKAGE).parts}
    return {name: {target for target in imported_modules(path) if target in modules} for name, path in modules.items()}


def test_every_package_folder_is_a_known_layer() -> None:
    folders = {path.name for path in PACKAGE.iterdir() if path.is_dir() and (path / "__init__.py").is_file()}
    assert folders - {"manifests"} == set(LAYERS)
    assert {path.stem for path in PACKAGE.glob("*.py")} == SHARED | {"__init__"}


def test_no_module_imports_a_higher_layer() -> None:
    upward = []
    for source, targets in graph().items():
        for target in targets:
            if layer(source) is not None and layer(target) is not None and layer(target) > layer(source):
                upward.append(f"{source} -> {target}")
    assert not upward, "imports that run up the layers:\n" + "\n".join(sorted(upward))


def test_shared_modules_import_nothing_of_the_package_but_each_other() -> None:
    edges = graph()
    for name in SHARED:
        assert all(target.split(".")[1] in SHARED for target in edges[f"tcs_fewshot.{name}"]), name


def test_no_import_cycles() -> None:
    edges = graph()
    # A package's __init__ re-exporting its modules is not a cycle with them.
    edges = {source: {t for t in targets if not source.startswith(t + ".")} for source, targets in edges.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycle = stack[stack.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_the_check_itself_sees_an_upward_import(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from tcs_fewshot.reports.tables import rich_table\n")
    assert "tcs_fewshot.reports.tables" in imported_modules(source)
    assert layer("tcs_fewshot.reports.tables") > layer("tcs_fewshot.data.index")
