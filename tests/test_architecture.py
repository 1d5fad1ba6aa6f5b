"""The package's shape: imports only go down the layers, and no module imports itself
back through others. A violation fails here, naming the file, its import and the rule."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pruneviz"

# Lowest first: a module may import its own layer and the layers below it.
LAYERS = ["i18n", "errors", "data", "core", "measure", "workflows", "output", "interfaces"]
INTERFACES = {"app", "cli"}  # the two front ends, side by side: neither imports the other


def layer_of(module: str) -> str:
    """`pruneviz.core.session` -> "core"; `pruneviz.cli` and `pruneviz.app.*` -> interfaces."""
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("__init__", "__main__"):
        return "top"
    return "interfaces" if parts[1] in INTERFACES else parts[1]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every pruneviz module `path` imports (at any depth, TYPE_CHECKING included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("pruneviz")]
        elif (isinstance(node, ast.ImportFrom) and node.module and node.level == 0
              and node.module.startswith("pruneviz")):
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def resolve(name: str, known: set[str]) -> str | None:
    """The module an imported name lives in: `pruneviz.core.plan.Plan` -> `pruneviz.core.plan`."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for module, path in files.items():
        targets = {resolve(name, set(files)) for _, name in imports_of(path)}
        edges[module] = {t for t in targets if t and t != module and t != "pruneviz"}
    return edges


def violations() -> list[str]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    found = []
    for module, path in sorted(files.items()):
        here = layer_of(module)
        if here == "top":
            continue
        for line, name in imports_of(path):
            target = resolve(name, set(files))
            if target is None or target == "pruneviz":
                continue
            there = layer_of(target)
            if there == "top":
                found.append(f"{path.relative_to(ROOT)}:{line} imports {target}, the face")
            elif LAYERS.index(there) > LAYERS.index(here):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {target}: "
                             f"{here} may not import {there}")
            elif here == there == "interfaces" and target.split(".")[1] != module.split(".")[1]:
                found.append(f"{path.relative_to(ROOT)}:{line} imports {target}: "
                             "the app and the CLI do not import each other")
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return result


def test_every_subpackage_is_a_known_layer() -> None:
    layers = {layer_of(module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert layers <= {*LAYERS, "top"}, layers - {*LAYERS, "top"}


def test_imports_only_go_down_the_layers() -> None:
    assert violations() == []


def test_no_import_cycles() -> None:
    assert cycles(graph()) == []


def test_the_checks_catch_a_violation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rule itself bites: core importing workflows, and a two-module loop, are found."""
    fake = tmp_path / "pruneviz"
    (fake / "core").mkdir(parents=True)
    (fake / "workflows").mkdir()
    (fake / "core" / "a.py").write_text("from pruneviz.workflows.b import thing\n")
    (fake / "workflows" / "b.py").write_text("from pruneviz.core.a import other\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert violations() == ["pruneviz/core/a.py:1 imports pruneviz.workflows.b: "
                            "core may not import workflows"]
    assert cycles(graph()) == [["pruneviz.core.a", "pruneviz.workflows.b"]]


def test_subpackages_say_their_job() -> None:
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init.relative_to(ROOT)} has no docstring saying the sub-package's job"
