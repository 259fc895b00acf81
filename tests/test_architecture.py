"""The package's import structure: no import cycle (function-level and type-only imports
included), TVM imported only under ``subp_fx/codegen``, and the modules that promise to run
without torch or TVM keep that promise. Read from the source (ast), nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parent.parent / "subp_fx"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE_ROOT.rglob("*.py"))}


def _imported_names(path: Path) -> list[tuple[str, bool]]:
    """(dotted name imported, at module level?) for every import statement in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` and try/except blocks still run (or type-check) at import
        if isinstance(node, (ast.If, ast.Try)):
            top_level |= {id(child) for child in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top_level) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(f"{node.module}.{alias.name}", id(node) in top_level) for alias in node.names]
            found.append((node.module, id(node) in top_level))
    return found


def _internal_edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the subp_fx modules it imports (``from pkg import name`` counts as importing
    ``pkg.name`` when that is a module, else ``pkg``)."""
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for imported, _ in _imported_names(path):
            if imported in modules and imported != name:
                edges[name].add(imported)
    # Drop the edge to a package when the same statement named one of its modules.
    for name, targets in edges.items():
        edges[name] = {t for t in targets if not any(o.startswith(t + ".") and o in targets for o in targets)}
    return edges


def _find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    cycle = _find_cycle(_internal_edges(_modules()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


def test_tvm_is_imported_under_codegen_only():
    offenders = [
        f"{name} imports {imported}"
        for name, path in _modules().items()
        if not name.startswith("subp_fx.codegen")
        for imported, _ in _imported_names(path)
        if imported == "tvm" or imported.startswith("tvm.")
    ]
    assert offenders == []


def _module_level_closure(start: str, modules: dict[str, Path]) -> tuple[set[str], set[str]]:
    """(subp_fx modules, third-party top-level packages) that importing ``start`` imports, with the
    parent packages' ``__init__`` modules Python runs on the way."""
    seen, external, todo = set(), set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
        todo += [parent for parent in parents if parent in modules]
        for imported, at_module_level in _imported_names(modules[name]):
            if not at_module_level:
                continue
            if imported in modules:
                todo.append(imported)
            elif not imported.startswith("subp_fx"):
                external.add(imported.split(".")[0])
    return seen, external


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("subp_fx.codegen.runtime.compiled", {"torch", "torchvision"}),  # a deployment host has no torch
        ("subp_fx.codegen.defaults", {"tvm", "torch"}),  # the CLI reads it before knowing the command
        ("subp_fx.codegen.kernels.modes", {"tvm", "torch"}),
        ("subp_fx.tools.load_balance", {"tvm"}),
        ("subp_fx.cli", {"tvm", "torch"}),
        ("subp_fx.quantize.precision", {"tvm", "torch"}),  # the CLI validates --precision with it
        ("subp_fx.train.checkpoint", {"tqdm", "tvm"}),  # compiling a checkpoint needs no trainer
    ],
)
def test_light_modules_stay_light(module, forbidden):
    modules = _modules()
    internal, external = _module_level_closure(module, modules)
    assert not (external & forbidden), f"{module} imports {sorted(external & forbidden)} at module level"
    if module == "subp_fx.train.checkpoint":
        assert "subp_fx.train.trainer" not in internal
