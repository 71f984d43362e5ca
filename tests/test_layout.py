"""The package's import graph: the stages import one way only, so a module never imports one that imports it back.

Imports inside functions count too: they keep heavy libraries off the CLI's start-up path, they must
not hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import scaffold

ROOT = Path(scaffold.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py") if "templates" not in p.parts}


def imported(path: Path, known: set[str], module_level_only: bool) -> set[str]:
    """The scaffold modules a file imports (``from scaffold.x import y`` counts y when y is a module)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known)
    found.discard(module_name(path))
    return found


def graph(module_level_only: bool) -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imported(path, known, module_level_only) for name, path in found.items()}


def cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the walk's path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := walk(node)):
            return found
    return None


def test_the_graph_sees_the_imports():
    # A reader that found no edges would pass any layout: the CLI reaches the pipeline and the verify ladder.
    edges = graph(module_level_only=False)
    assert "scaffold.errors" in edges["scaffold.cli"]
    assert any(name.startswith("scaffold.pipeline") for name in edges["scaffold.cli"])
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_module_level_imports_form_a_dag():
    assert cycle(graph(module_level_only=True)) is None


def test_no_module_imports_one_that_imports_it_back():
    assert cycle(graph(module_level_only=False)) is None


# What an import inside a function may defer: the libraries that make start-up slow.
HEAVY = {
    "torch", "timm", "libcst", "copier", "terratorch", "terratorch_iterate", "yaml", "rich",
    "numpy", "scipy", "rasterio", "mlflow", "ray", "matplotlib", "lightning", "jinja2",
}  # fmt: skip


def external_imports(path: Path) -> set[str]:
    """The top-level packages other than scaffold a file imports at module level."""
    found: set[str] = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_imports_inside_functions_only_defer_heavy_libraries():
    found = modules()
    edges = graph(module_level_only=True)

    def heavy(name: str, seen: set[str]) -> bool:
        if name in seen:
            return False
        seen.add(name)
        return bool(external_imports(found[name]) & HEAVY) or any(
            heavy(other, seen) for other in edges[name]
        )

    light = []
    for name, path in sorted(found.items()):
        tree = ast.parse(path.read_text(), str(path))
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if id(node) in top or not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            target = next((t for t in targets if t in found), None)
            # The CLI defers each command's own stages too: `scaffold --help` loads none.
            if target is not None and name != "scaffold.cli" and not heavy(target, set()):
                light.append(f"{name}:{node.lineno} imports {target}")
    assert light == []
    # the rule sees a heavy module as heavy, and a light one as light
    assert heavy("scaffold.analyse.trace", set())
    assert not heavy("scaffold.errors", set())
