"""The folder layout is the architecture: pure logic apart from I/O.

spendgate.api (types), spendgate.policy (the compiler and the bundle format) and spendgate.logic
(money, windows, decisions, replay) import nothing that does I/O: no network client, no
Kubernetes, no database, no adapters, no proxy or operator. A newcomer can trust the folder.
"""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "core" / "spendgate"
PURE = ("api", "policy", "logic")
# Modules that do I/O (or pull in what does); a pure module importing one of them is a layering bug.
IO_MODULES = ("aiohttp", "httpx", "kubernetes", "kopf", "psycopg", "duckdb", "uvicorn", "socket", "subprocess",
              "spendgate.adapters", "spendgate.proxy", "spendgate.operator", "spendgate.cli")


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_pure_packages_import_no_io() -> None:
    offenders = []
    for package in PURE:
        for path in sorted((CORE / package).rglob("*.py")):
            for module in imported_modules(path):
                if any(module == banned or module.startswith(banned + ".") for banned in IO_MODULES):
                    offenders.append(f"{path.relative_to(CORE)} imports {module}")
    assert offenders == []


def test_every_core_module_sits_in_a_named_layer() -> None:
    """Nothing new lands at the top of the package, where its side of the boundary is unclear."""
    top_level = sorted(path.name for path in CORE.glob("*.py") if path.name != "__init__.py")
    assert top_level == []
