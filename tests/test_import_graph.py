"""Imports point down: no circle among sdtui's modules, and the app never imports the CLI.

Read from the source with ast, so every import counts, also the ones inside functions (a
deferred import is still a dependency); only `if TYPE_CHECKING:` imports are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import sdtui

ROOT = Path(sdtui.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, modules: set[str], type_checking: bool = False) -> set[str]:
    """The sdtui modules `path` imports (a `from package import name` of a submodule counts
    as importing that submodule); `type_checking`: the `if TYPE_CHECKING:` ones too."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if not type_checking and isinstance(node, ast.If) and _is_type_checking(node):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(
        ".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m in modules and m != module_name(path)}


def import_graph(type_checking: bool = False) -> dict[str, set[str]]:
    paths = {module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(paths)
    return {name: imports_of(path, modules, type_checking) for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_walker_sees_deferred_imports_and_skips_type_checking_ones() -> None:
    graph = import_graph()
    assert "sdtui.ui.app" in graph["sdtui.cli"]  # imported inside main()
    assert "sdtui.client" not in graph["sdtui.ui.screens.prompt"]  # under TYPE_CHECKING
    assert "sdtui.client" in import_graph(type_checking=True)["sdtui.ui.screens.prompt"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_circles() -> None:
    assert cycles(import_graph()) == []


def test_no_circles_hidden_behind_type_checking() -> None:
    """A type-only import is still a dependency: `if TYPE_CHECKING:` must not hide a circle
    (headless_batch once named headless's Reporter that way while headless imported it). Screens
    are typed against ui.host, which the app implements: no screen imports the app module."""
    graph = import_graph(type_checking=True)
    assert cycles(graph) == []
    assert [m for m, deps in graph.items()
            if m.startswith("sdtui.ui.screens") and "sdtui.ui.app" in deps] == []


def test_nothing_under_ui_imports_the_cli() -> None:
    graph = import_graph()
    offenders = sorted(m for m, deps in graph.items()
                       if m.startswith("sdtui.ui") and "sdtui.cli" in deps)
    assert offenders == []


def test_the_core_imports_no_front_end() -> None:
    graph = import_graph()
    front_ends = {"sdtui.cli", "sdtui.headless"}
    core = [m for m in graph if not m.startswith(("sdtui.ui", "sdtui.devtools"))
            and m not in front_ends | {"sdtui.__main__"}]
    offenders = {m: sorted(d for d in graph[m] if d in front_ends or d.startswith("sdtui.ui"))
                 for m in core}
    assert {m: d for m, d in offenders.items() if d} == {}
