"""The package structure the README promises: imports point one way, one training loop, no private reach-ins."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "crelu"

# Lower layers never import higher ones; packages of one layer may import each other without a cycle.
LAYERS = [
    {"config", "nn"},
    {"results", "evaluation", "models"},
    {"data"},
    {"training"},
    {"protocols"},
    {"tables", "analysis", "report", "sweep"},
    {"train", "__init__"},
]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def _modules() -> dict[str, Path]:
    return {".".join(p.relative_to(SRC.parent).with_suffix("").parts): p for p in SRC.rglob("*.py")}


def _imports(path: Path, module: str) -> list[tuple[str, list[str]]]:
    """(imported module, imported names) of every import in the file, function-level ones included."""
    out = []
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            out.append((target, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names)
    return [(t, names) for t, names in out if t == "crelu" or t.startswith("crelu.")]


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in _modules().items():
        src = _package(module)
        for target, names in _imports(path, module):
            targets = [f"crelu.{n}" for n in names] if target == "crelu" else [target]
            for t in targets:
                dst = _package(t)
                if dst != src:
                    graph.setdefault(src, set()).add(dst)
    return graph


def test_every_package_has_a_layer():
    packages = {_package(m) for m in _modules()}
    assert packages <= set(RANK), f"packages without a layer in this test: {sorted(packages - set(RANK))}"


def test_imports_point_down_the_layers():
    wrong = [(a, b) for a, targets in package_graph().items() for b in targets if RANK[a] < RANK[b]]
    assert not wrong, f"imports against the layering config -> data, models -> training -> protocols -> ...: {wrong}"


def test_no_import_cycle_between_packages():
    graph = package_graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError(f"import cycle: {' -> '.join([*path, node, nxt])}")
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for pkg in sorted(graph):
        if pkg not in state:
            visit(pkg, [])


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for module, path in _modules().items():
        for target, names in _imports(path, module):
            if target != module:
                offenders += [f"{module} imports {target}.{n}" for n in names
                              if n.startswith("_") and n != "__version__"]
    assert not offenders, offenders


def test_the_layering_test_catches_a_violation(tmp_path, monkeypatch):
    # a fake upward import (data -> protocols) must be reported
    fake = tmp_path / "crelu"
    for path in _modules().values():
        dst = fake / path.relative_to(SRC)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(path.read_text())
    (fake / "data" / "bad.py").write_text("from crelu.protocols.runner import run\n")
    monkeypatch.setattr(__import__(__name__), "SRC", fake)
    graph = package_graph()
    assert "protocols" in graph["data"] and RANK["data"] < RANK["protocols"]


def test_one_training_loop():
    """``train_epoch`` is defined once; optimiser steps happen only in its step adapters."""
    defs, steps = [], []
    for module, path in _modules().items():
        text = path.read_text()
        tree = ast.parse(text)
        defs += [module for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "train_epoch"]
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for call in (c for c in ast.walk(cls) if isinstance(c, ast.Call)):
                f = call.func
                if isinstance(f, ast.Attribute) and f.attr == "step" and "optimizer" in ast.unparse(f.value):
                    steps.append(f"{module}.{cls.name}")
        top_level = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        for fn in top_level:
            for call in (c for c in ast.walk(fn) if isinstance(c, ast.Call)):
                f = call.func
                if isinstance(f, ast.Attribute) and f.attr == "step" and "optimizer" in ast.unparse(f.value):
                    steps.append(f"{module}.{fn.name}")
    assert defs == ["crelu.training.engine"]
    assert sorted(steps) == ["crelu.training.engine.ModelStep", "crelu.training.packed.PackedStep"]
