"""The layering: analysis <- trainables <- grid <- bench, and inside grid plan/tracking <- execution/reports <- cli.

Every import of every module (those inside functions too) is read from its source with ast, so a lazy
import that crosses a layer is caught as well as a top-level one. ~1 s, no project module imported.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# package (a module path prefix) -> the project packages it may import; the longest prefix decides
ALLOWED = {
    "analysis": {"analysis"},
    "trainables": {"trainables", "analysis"},
    "grid": {"grid", "trainables", "analysis"},              # grid.cli and grid/__init__: every part
    "grid.plan": {"grid.plan", "trainables", "analysis"},
    "grid.tracking": {"grid.tracking", "trainables", "analysis"},
    "grid.execution": {"grid.execution", "grid.plan", "grid.tracking", "trainables", "analysis"},
    "grid.reports": {"grid.reports", "grid.plan", "grid.tracking", "trainables", "analysis"},
    "bench": {"bench", "grid", "trainables", "analysis"},
}
PROJECT = ("analysis", "trainables", "grid", "bench")


def _owner(module, packages):
    """The longest package of `packages` that `module` (dotted) is in, or None."""
    matches = [p for p in packages if module == p or module.startswith(p + ".")]
    return max(matches, key=len) if matches else None


def imported_modules(source):
    """Every module path an import in `source` names; `from grid import plan` names grid.plan."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def forbidden_edges(module, source):
    """[(module, imported)] for each import of `source` (module `module`) that its layer does not allow."""
    rules = ALLOWED[_owner(module, ALLOWED)]
    edges = []
    for imported in imported_modules(source):
        if _owner(imported, PROJECT) is None:
            continue                              # the standard library and third-party packages
        target = _owner(imported, ALLOWED)
        if not any(target == allowed or target.startswith(allowed + ".") for allowed in rules):
            edges.append((module, imported))
    return edges


def project_modules():
    for package in PROJECT:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def test_no_module_imports_across_its_layer():
    edges = [edge for module, path in project_modules() for edge in forbidden_edges(module, path.read_text())]
    assert edges == [], "forbidden imports (module, imported): %s" % edges


@pytest.mark.parametrize("module, source", [
    ("trainables.trial", "from grid.plan import config"),                # a back-edge into grid
    ("analysis.tables", "import trainables.store"),                      # analysis is pure
    ("grid.plan.config", "def f():\n    from grid.tracking import mlflow_runs"),   # lazy, plan -> tracking
    ("grid.tracking.server", "from grid import execution"),              # `from grid import part`
    ("grid.reports.report", "from grid.execution import stages"),        # reports never run anything
    ("grid.execution.stages", "from grid import cli"),
])
def test_a_forbidden_import_is_found(module, source):
    assert forbidden_edges(module, source) != []


def test_allowed_imports_are_not_flagged():
    assert forbidden_edges("grid.execution.stages", "from grid.plan import packing\nimport ray\nimport os") == []
    assert forbidden_edges("grid.cli", "from grid.execution.stages import run_grid") == []
