"""The package's shape: no import cycles inside dyto/, dependencies pointing one way, and the
library never importing its notebook layer (dyto.api).

Imports are read from the source with `ast` (those inside functions too), so a cycle hidden
behind a lazy import is still a cycle.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dyto"

# lower floors never import higher ones (docs/internals.md "Floors")
FLOORS = [
    {"dyto", "dyto.errors", "dyto.records", "dyto.registry", "dyto.runlock", "dyto.runs"},
    {"dyto.reduction"},
    {"dyto.viz"},  # figures from arrays
    {"dyto.datamodules"},
    {"dyto.models"},
    {"dyto.predict"},
    {"dyto.evaluation"},
    {"dyto.callbacks", "dyto.preflight"},
    {"dyto.api"},  # the notebook layer
    {"dyto.cli", "dyto.demo"},  # command-line front ends: users of the library, like a notebook
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """dyto modules that ``path`` imports (absolute and relative, at any depth of the file)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from pkg import sub` imports the submodule when there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in known}
    return out - {name}


@functools.lru_cache(maxsize=1)
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(path, name, set(mods)) for name, path in mods.items()}


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(g[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (found := visit(m)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (found := visit(n)):
            return found
    return None


def floor_of(name: str) -> int:
    best = None
    for i, floor in enumerate(FLOORS):
        for prefix in floor:
            if name == prefix or (prefix != "dyto" and name.startswith(prefix + ".")):
                best = i
    assert best is not None, f"{name} is on no floor: add it to FLOORS and docs/internals.md"
    return best


def test_no_import_cycle_inside_dyto():
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()))


def test_the_checker_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("name", sorted(modules()))
def test_dependencies_point_down(name):
    up = [m for m in graph()[name] if floor_of(m) > floor_of(name)]
    assert not up, f"{name} imports {up}, which sit above it"


def test_the_library_never_imports_the_notebook_layer():
    users = sorted(n for n, deps in graph().items() if "dyto.api" in deps)
    assert all(floor_of(n) == len(FLOORS) - 1 for n in users), users  # only the front ends use it
