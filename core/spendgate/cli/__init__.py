"""`spendgate`: the command line for people and for CI.

Every subcommand answers bad input with one line that names what is wrong and exits non-zero;
no stack traces. Each command group lives in its own module with a `register(commands)`; the proxy
and the operator are imported only when their subcommand runs, so `spendgate validate` in a PR
check starts fast and needs neither aiohttp nor kopf. A lean command (the status line, which Claude
Code runs after every turn) imports its own module and nothing else.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from spendgate.cli.common import HelpFormatter, UsageError

DEBUG_ENV = "SPENDGATE_DEBUG"
# Command groups (modules of spendgate.cli), in the order `spendgate --help` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "policies", "diff", "dryrun", "keys", "ledger", "audit", "finance", "status", "statusline")
# Commands whose parser needs only their own module.
LEAN_COMMANDS: dict[str, tuple[str, ...]] = {"statusline": ("statusline",)}
# Subcommands that live with their component: module path, each with add_arguments() and run().
COMPONENT_COMMANDS = {
    "proxy": ("spendgate.proxy.main", "run the gateway (standalone with --policies, or from a bundle)"),
    "operator": ("spendgate.operator.main", "run the operator against the current kubeconfig"),
    "injector": ("spendgate.operator.injector.main", "run the sidecar injection webhook (docs/injection.md)"),
}


def build_parser(requested: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; for a component (a long-running process: the proxy, the operator) or a lean
    command, only its own, so that nothing else is imported into it."""
    parser = argparse.ArgumentParser(prog="spendgate", description=__doc__.splitlines()[0],
                                     formatter_class=HelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules: tuple[str, ...]
    if requested in COMPONENT_COMMANDS:
        modules, components = (), {requested: COMPONENT_COMMANDS[requested]}
    elif requested in LEAN_COMMANDS:
        modules, components = LEAN_COMMANDS[requested], {}
    else:
        modules, components = COMMAND_MODULES, COMPONENT_COMMANDS
    for module in modules:
        importlib.import_module(f"spendgate.cli.{module}").register(commands)
    for name, (module_path, help_text) in components.items():
        sub = commands.add_parser(name, help=help_text, description=help_text,
                                  formatter_class=HelpFormatter)
        sub.set_defaults(component=module_path)
        if name == requested:
            importlib.import_module(module_path).add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(requested=arguments[0] if arguments else None)
    args = parser.parse_args(arguments)
    try:
        if getattr(args, "component", None):
            return int(importlib.import_module(args.component).run(args))
        return int(args.handler(args))
    except _input_errors() as error:  # evaluated only when something was raised
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `spendgate render ... | head` is not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps Python's exit-time flush quiet
        return 0
    except OSError as error:  # a path that cannot be read or written: name it, no traceback
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        return 1
    except Exception as error:  # a bug: one line for the user, the traceback only when asked for
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"error: internal error ({type(error).__name__}: {error}); set {DEBUG_ENV}=1 for the traceback "
              "and please report it", file=sys.stderr)
        return 1


def _input_errors() -> tuple[type[Exception], ...]:
    """Bad input, ours and the adapters': those are imported when one may have been raised (the key
    stores bring the Kubernetes client, which a lean command never loads)."""
    from spendgate.adapters.keysfile import KeysFileError
    from spendgate.adapters.keystores import KeyStoreError

    return UsageError, KeysFileError, KeyStoreError


__all__ = ["UsageError", "build_parser", "main"]
