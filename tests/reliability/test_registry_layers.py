"""The registry package is layered (issue 10): no import circle, operations never import the facade.

Two independent checks: the import graph read from the source with ``ast`` (every import,
including those inside functions and under ``TYPE_CHECKING``), and each module imported alone
in a fresh interpreter (an import circle that only works in one order fails there).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "aitrader" / "registry"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")

# bottom-up: a module may import only modules of a strictly lower layer
LAYERS = [
    {"names", "types", "hashing"},
    {"layout", "manifest_check", "journal", "backends"},
    {"index"},
    {"catalog"},
    {"log", "verify"},
    {"loading", "register", "rebuild"},
    {"deploy"},
    {"store"},
]


def _registry_imports(module: str) -> set[str]:
    """Registry modules imported anywhere in ``module`` (``from aitrader.registry import x`` counts as x)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "aitrader.registry":
                found |= {a.name for a in node.names if a.name in MODULES}
                if any(a.name not in MODULES for a in node.names):
                    found.add("__init__")
            elif node.module.startswith("aitrader.registry."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("aitrader.registry."):
                    found.add(alias.name.split(".")[2])
    return found - {module}


def test_every_module_has_a_layer() -> None:
    assert sorted(set().union(*LAYERS)) == MODULES


def test_imports_only_go_down_the_layers() -> None:
    layer = {m: i for i, group in enumerate(LAYERS) for m in group}
    wrong = [
        f"{m} (layer {layer[m]}) imports {dep} (layer {layer.get(dep, '__init__')})"
        for m in MODULES
        for dep in sorted(_registry_imports(m))
        if dep == "__init__" or layer[dep] >= layer[m]
    ]
    assert wrong == []


def test_the_import_graph_has_no_cycle() -> None:
    graph = {m: _registry_imports(m) for m in MODULES}
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(m: str, path: list[str]) -> None:
        if state.get(m) == 1:
            raise AssertionError(f"import circle: {' -> '.join([*path, m])}")
        if state.get(m) == 2:
            return
        state[m] = 1
        for dep in sorted(graph[m]):
            visit(dep, [*path, m])
        state[m] = 2

    for m in MODULES:
        visit(m, [])
    assert not any("store" in deps for m, deps in graph.items())  # only __init__ imports the facade


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone_in_a_fresh_interpreter(module: str) -> None:
    code = (
        f"import aitrader.registry.{module}, sys; "
        "heavy = sorted(m for m in ('numpy', 'pandas', 'lightgbm', 'onnxruntime') if m in sys.modules); "
        "print(heavy)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"{module} imports a heavy library: {proc.stdout}"
