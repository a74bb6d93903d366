"""The layer rules of docs/architecture.md, enforced on the source with `ast` (nothing is imported).

Foundation (`pipeline.config*`, `errors`, `artifacts`, `checkpoint`, `progress`, `models*`, `data*`, `metrics*`) imports no
top module (stages, CLI, orchestration, reports), nor `trainers`, `exporters` or `deploy`. Those three import
only the foundation of `pipeline`; `exporters` never imports `trainers`. Every import counts, lazy ones too.
Separately, imports form no cycle between modules, except registry self-registration.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "trainers", "exporters", "deploy")
FOUNDATION = (
    "pipeline.config", "pipeline.errors", "pipeline.artifacts", "pipeline.checkpoint",
    "pipeline.models", "pipeline.data", "pipeline.metrics", "pipeline.progress", "pipeline.nm_sparsity",
)  # fmt: skip

# Cycles that are by design: a registry whose built-in entries register themselves on import.
ALLOWED_CYCLES: set[frozenset[str]] = {
    frozenset({"pipeline.models.registry", "pipeline.models.zoo"}),
}



def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out[_module_name(path)] = path
    return out


MODULES = _modules()


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_pkg = MODULES[importer].name == "__init__.py"
    base = importer.split(".")[: len(importer.split(".")) - node.level + (1 if is_pkg else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(importer: str, node: ast.AST) -> Iterator[str]:
    """Project modules an import statement loads (`from a import b` is `a.b` when that is a module)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
    elif isinstance(node, ast.ImportFrom):
        base = _resolve(importer, node)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            yield sub if sub in MODULES else base


def _is_project(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _imports(module: str, *, module_level_only: bool) -> set[str]:
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    if module_level_only:
        # top-level statements, including those nested in module-level if/try blocks, but not in defs/classes
        nodes, stack = [], list(tree.body)
        while stack:
            node = stack.pop()
            nodes.append(node)
            if isinstance(node, (ast.If, ast.Try)):
                stack += node.body + node.orelse + getattr(node, "finalbody", [])
                stack += [s for h in getattr(node, "handlers", []) for s in h.body]
    else:
        nodes = list(ast.walk(tree))
    return {t for n in nodes for t in _targets(module, n) if _is_project(t)}


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _is_foundation(name: str) -> bool:
    return name == "pipeline" or _within(name, FOUNDATION)


def _violations(importers, forbidden) -> list[str]:
    found = []
    for mod in sorted(MODULES):
        if not importers(mod):
            continue
        for target in sorted(_imports(mod, module_level_only=False)):
            if forbidden(target):
                found.append(f"{mod} imports {target}")
    return found


def test_the_rules_see_the_whole_project():
    assert {"pipeline.config.schema", "pipeline.stages.base", "pipeline.cli", "trainers.loop"} <= set(MODULES)
    # the checker itself catches a lazy import (guard against a rule that can never fire)
    assert "pipeline.report" in _imports("pipeline.orchestrate", module_level_only=False)


def test_foundation_never_imports_the_top_or_the_packages_above():
    def forbidden(t: str) -> bool:
        return _within(t, ("trainers", "exporters", "deploy")) or (t.startswith("pipeline.") and not _is_foundation(t))

    assert _violations(_is_foundation, forbidden) == []


def test_trainers_exporters_deploy_import_only_the_foundation_of_pipeline():
    def forbidden(t: str) -> bool:
        return t.startswith("pipeline.") and not _is_foundation(t)

    assert _violations(lambda m: _within(m, ("trainers", "exporters", "deploy")), forbidden) == []


def test_exporters_never_import_trainers():
    assert _violations(lambda m: _within(m, ("exporters",)), lambda t: _within(t, ("trainers",))) == []


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize("module_level_only", [True, False], ids=["module-level", "lazy-too"])
def test_no_import_cycles_between_modules(module_level_only):
    """A lazy import that closes a cycle is still a cycle: it only hides it from Python's import order."""
    graph = {m: {t for t in _imports(m, module_level_only=module_level_only) if t in MODULES and t != m}
             for m in MODULES}
    cycles = [c for c in _cycles(graph) if c not in ALLOWED_CYCLES]
    assert cycles == [], [sorted(c) for c in cycles]


@pytest.mark.parametrize("module", ["pipeline.config", "pipeline.config.schema", "pipeline.config.loader"])
def test_config_is_a_leaf(module):
    imported = _imports(module, module_level_only=False)
    assert {t for t in imported if not _within(t, ("pipeline.config", "pipeline.errors"))} == set()
