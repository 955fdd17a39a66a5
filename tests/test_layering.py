"""The import direction of the packages (see docs/design.md, "Layers").

`nas/` is the core: it never imports `search_spaces`, `latency_tables` or
`predictors`, which register into it. `nas/app/`, the application that wires every
package together (the CLI, the builder, the pipeline, the report), is the only
exception, and neither the core nor the packages above it import the application.
Only the test kits (`nas/testing/`) import pytest. Function-level imports count too."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UPPER = ("search_spaces", "latency_tables", "predictors")
#: The application layer inside `nas/`: what `nas search` and `nas latency` run.
APP = "nas.app"
#: The test kits inside `nas/`: the only modules that import pytest.
TESTING = "nas.testing"


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in `path`, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def _files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", _files("nas"), ids=lambda p: str(p.relative_to(ROOT / "nas")))
def test_the_core_never_imports_an_upper_package(path):
    rel = str(path.relative_to(ROOT / "nas"))
    if rel.startswith("app/"):
        return
    upward = [(n, m) for n, m in imports(path) if m.split(".")[0] in UPPER]
    assert not upward, f"nas/{rel} imports {upward}: register into nas instead"
    app = [(n, m) for n, m in imports(path) if _is_app(m)]
    assert not app, f"nas/{rel} imports the application layer: {app}"


def _is_app(module: str) -> bool:
    return _within(module, APP)


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_only_the_test_kits_import_pytest():
    # `import nas` must not load pytest; the kits are imported by test modules only.
    kits = ROOT / "nas" / "testing"
    offenders = [
        f"nas/{p.relative_to(ROOT / 'nas')}:{n} imports {m}"
        for p in _files("nas")
        if kits not in p.parents
        for n, m in imports(p)
        if m.split(".")[0] in ("pytest", "_pytest") or _within(m, TESTING)
    ]
    assert not offenders, f"{offenders}: move test helpers into nas/testing/ or the tests"


@pytest.mark.parametrize(
    "path",
    [p for pkg in UPPER for p in _files(pkg)],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_upper_packages_never_import_the_application(path):
    app = [(n, m) for n, m in imports(path) if _is_app(m)]
    assert not app, f"{path.relative_to(ROOT)} imports the application layer: {app}"
