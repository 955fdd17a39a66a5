"""The application layer's modules import one another without circles.

A circle dodged by a function-level import is still a circle: every import counts,
at any depth, so `nas.app.cli` → `nas.app.cli_latency` → `nas.app.cli` fails here."""

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "nas" / "app"


def _app_imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        out |= {n for n in names if n.startswith("nas.app.")}
    return out


def test_the_application_modules_import_without_circles():
    modules = {f"nas.app.{p.stem}": p for p in APP.glob("*.py") if p.stem != "__init__"}
    graph = {m: _app_imports(p) & set(modules) - {m} for m, p in modules.items()}
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as e:
        raise AssertionError(f"import circle in nas/app: {' -> '.join(e.args[1])}") from None
    assert set(order) == set(modules)
    assert graph.get("nas.app.cli")  # the graph is not trivially empty
