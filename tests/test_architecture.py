"""The import boundaries of docs/architecture.md, read from the source with ``ast``: the engine
stands alone, and the app reaches the simulator only through ``player/reality.py``, lazily."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = {"world_engine", "simulator", "training", "bench", "player", "app"}
# What each package may import of the project (besides itself); docs/architecture.md has the table.
ALLOWED = {
    "world_engine": set(),
    "simulator": {"world_engine"},
    "training": {"world_engine", "simulator"},
    "bench": {"world_engine"},
    "player": {"world_engine", "simulator"},    # the simulator only as below
    "app": {"player"},
}
SIMULATOR_ADAPTER = ROOT / "player" / "reality.py"


def _sources(package: str) -> list[Path]:
    return [ROOT / "app.py"] if package == "app" else sorted((ROOT / package).rglob("*.py"))


class _Imports(ast.NodeVisitor):
    """Project packages a module imports, each with whether the import runs when the module loads."""

    def __init__(self) -> None:
        self.found: list[tuple[str, int, bool]] = []    # (package, line, at import time)
        self._lazy = 0

    def _nested(self, node: ast.AST) -> None:
        self._lazy += 1
        self.generic_visit(node)
        self._lazy -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = _nested

    def visit_If(self, node: ast.If) -> None:
        if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            self._nested(node)
        else:
            self.generic_visit(node)

    def _add(self, name: str, line: int) -> None:
        top = name.split(".")[0]
        if top in PROJECT:
            self.found.append((top, line, self._lazy == 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self._add(node.module, node.lineno)


def imports(path: Path) -> list[tuple[str, int, bool]]:
    visitor = _Imports()
    visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return visitor.found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_each_package_imports_only_what_the_architecture_allows(package):
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {name}"
             for path in _sources(package) for name, line, _ in imports(path)
             if name != package and name not in ALLOWED[package]]
    assert not wrong, "\n".join(wrong)


def test_the_app_reaches_the_simulator_only_through_its_adapter_and_lazily():
    wrong = []
    for path in _sources("player") + _sources("app"):
        for name, line, eager in imports(path):
            if name == "simulator" and (path != SIMULATOR_ADAPTER or eager):
                wrong.append(f"{path.relative_to(ROOT)}:{line}" + (" at import time" if eager else ""))
    assert not wrong, "\n".join(wrong)
    assert any(name == "simulator" for name, _, _ in imports(SIMULATOR_ADAPTER))   # the checks above see it


def test_loading_the_app_loads_no_simulator_module():
    code = ("import sys, app, player.backends, player.handlers; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'simulator'))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
