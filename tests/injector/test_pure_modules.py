"""The injector's logic is pure, like core's pure layers: pod in, patch out; clock in, certificate out."""

from __future__ import annotations

from pathlib import Path

from unit.test_layout import IO_MODULES, imported_modules

INJECTOR = Path(__file__).resolve().parents[2] / "operator" / "spendgate" / "operator" / "injector"
PURE = ("settings", "sidecar", "patch", "review", "certificates")


BANNED = (*IO_MODULES, "aiohttp", "ssl", "tempfile")


def test_the_injection_logic_imports_no_io() -> None:
    pure = {f"spendgate.operator.injector.{name}" for name in PURE}
    offenders = [f"{name}.py imports {module}" for name in PURE for module in imported_modules(INJECTOR / f"{name}.py")
                 if module not in pure and any(module == banned or module.startswith(banned + ".")
                                               for banned in BANNED)]

    assert offenders == []
