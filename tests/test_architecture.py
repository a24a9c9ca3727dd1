"""The data path of docs/ARCHITECTURE.md holds in the imports: each package imports rightwards."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# runtime -> autotune -> generator -> templates -> cache, all over the shared core.
ORDER = ("runtime", "autotune", "generator", "templates", "cache")
SHARED = "tessera_core"
# Command-line entry points at the top of the stack (composition roots), named in ARCHITECTURE.md.
COMPOSITION_ROOTS = {"generator/tune.py"}


def _imported_packages(path: Path) -> set[str]:
    tops = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            tops |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            tops.add(node.module.split(".")[0])
    return tops


def test_packages_import_only_rightwards_or_the_core() -> None:
    violations = []
    for package in (*ORDER, SHARED):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel in COMPOSITION_ROOTS:
                continue
            for top in _imported_packages(path) & {*ORDER, SHARED}:
                if top in (package, SHARED):
                    continue
                if package == SHARED or ORDER.index(top) < ORDER.index(package):
                    violations.append(f"{rel} imports {top}")
    assert not violations, "imports against the data path:\n" + "\n".join(violations)


def test_architecture_doc_names_every_composition_root() -> None:
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    for root in COMPOSITION_ROOTS:
        assert root in doc
