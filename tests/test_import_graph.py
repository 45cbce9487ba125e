"""The package's import graph has no cycle: every import of every module (module level, function level and
under ``TYPE_CHECKING``) read with ``ast``, an edge from the importing module to the package module it names."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "lrt_rerank"
SOURCE = Path(__file__).resolve().parent.parent / "python"
EXTENSIONS = {f"{PACKAGE}._core"}
"""Compiled modules: leaves of the graph."""


def modules(source: Path = SOURCE) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package (a package is its ``__init__``)."""
    found: dict[str, Path] = {}
    for path in sorted((source / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(source).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imported(module: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that ``module`` imports anywhere in its file."""
    is_package = path.name == "__init__.py"
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            submodules = [f"{source}.{alias.name}" for alias in node.names]
            names += [name for name in submodules if name in known]
            if any(name not in known for name in submodules):
                names.append(source)  # an attribute of ``source``
    edges: set[str] = set()
    for name in names:
        while name and name not in known:  # ``a.b.attr`` -> module ``a.b``
            name = name.rpartition(".")[0]
        if name and name != module and name.startswith(PACKAGE):
            edges.add(name)
    return edges


def import_graph(source: Path = SOURCE) -> dict[str, set[str]]:
    files = modules(source)
    known = set(files) | EXTENSIONS
    graph = {name: imported(name, path, known) for name, path in files.items()}
    graph.update({name: set() for name in EXTENSIONS})
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if root in state:
            continue
        path: list[str] = [root]
        stack = [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_the_checker_sees_function_level_and_relative_imports(tmp_path: Path) -> None:
    package = tmp_path / PACKAGE
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from lrt_rerank import _core\n")
    (package / "a.py").write_text("def f():\n    from lrt_rerank.sub import b\n    return b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import f\n")
    graph = import_graph(tmp_path)
    assert graph[f"{PACKAGE}.a"] == {f"{PACKAGE}.sub.b"}
    assert graph[f"{PACKAGE}.sub.b"] == {f"{PACKAGE}.a"}
    assert graph[PACKAGE] == {f"{PACKAGE}._core"}
    assert find_cycle(graph) in ([f"{PACKAGE}.a", f"{PACKAGE}.sub.b", f"{PACKAGE}.a"], [f"{PACKAGE}.sub.b", f"{PACKAGE}.a", f"{PACKAGE}.sub.b"])
    (package / "sub" / "b.py").write_text("import lrt_rerank.sub\n")
    assert find_cycle(import_graph(tmp_path)) is None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 100, "the package's modules were not found"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
