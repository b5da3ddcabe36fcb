"""`spendgate`: the command line for people and for CI.

Every subcommand answers bad input with one line that names what is wrong and exits non-zero;
no stack traces. The proxy and the operator are imported only when their subcommand runs, so
`spendgate validate` in a PR check starts fast and needs neither aiohttp nor kopf.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from spendgate.api.crds import render_all, write_all
from spendgate.policy.bundle import SignedBundle, dumps
from spendgate.policy.keys import KeysFileError, create_key, read_keys_file, revoke_key
from spendgate.policy.loader import compile_directory

# Subcommands that live with their component: module path, each with add_arguments() and run().
COMPONENT_COMMANDS = {
    "proxy": ("spendgate.proxy.main", "run the gateway (standalone with --policies, or from a bundle)"),
    "operator": ("spendgate.operator.main", "run the operator against the current kubeconfig"),
}


class UsageError(Exception):
    """Bad input from the user; the message is printed as is."""


def _validate(args: argparse.Namespace) -> int:
    result = compile_directory(args.policies, args.keys_file)
    for error in result.errors:
        print(f"error: {error}", file=sys.stderr)
    bundle = result.bundle.bundle
    print(f"{len(bundle.costCenters)} cost centers, {len(bundle.budgets)} budgets, "
          f"{len(bundle.routingPolicies)} routing policies, {len(bundle.keys)} keys; "
          f"{len(result.errors)} errors; bundle {result.bundle.version}")
    return 1 if result.errors else 0


def _render(args: argparse.Namespace) -> int:
    result = compile_directory(args.policies, args.keys_file)
    for error in result.errors:
        print(f"error: {error}", file=sys.stderr)
    if result.errors and not args.allow_errors:
        return 1
    data = dumps(result.bundle)
    if args.out:
        args.out.write_bytes(data)
    else:
        sys.stdout.buffer.write(data + b"\n")
    return 0


def _bundle_schema(args: argparse.Namespace) -> int:
    print(json.dumps(SignedBundle.model_json_schema(), indent=2, sort_keys=True))
    return 0


def _crds_generate(args: argparse.Namespace) -> int:
    for path in write_all(args.out):
        print(path)
    return 0


def _crds_check(args: argparse.Namespace) -> int:
    stale = [name for name, text in render_all().items()
             if not (args.out / name).exists() or (args.out / name).read_text() != text]
    for name in stale:
        print(f"error: {args.out / name} is stale; run `spendgate crds generate`", file=sys.stderr)
    return 1 if stale else 0


def _keys_create(args: argparse.Namespace) -> int:
    name = args.name or args.developer
    plaintext = create_key(args.keys_file, name=name, developer=args.developer, cost_center=args.cost_center)
    print(plaintext)
    print(f"# key {name!r} for {args.developer} ({args.cost_center}) added to {args.keys_file}; "
          "this is the only time the key is shown", file=sys.stderr)
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    revoke_key(args.keys_file, args.name)
    print(f"revoked {args.name!r} in {args.keys_file}")
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    for key in read_keys_file(args.keys_file).keys:
        state = "revoked" if key.revoked else "active"
        print(f"{key.name}\t{key.developer}\t{key.costCenter}\t{state}\tsha256:{key.hash[:12]}")
    return 0


def build_parser(requested: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; only the `requested` component's module is imported for its options."""
    parser = argparse.ArgumentParser(prog="spendgate", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int], help_text: str,
                parent: argparse._SubParsersAction[argparse.ArgumentParser] = commands
                ) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    for name in ("validate", "render"):
        sub = command(name, _validate if name == "validate" else _render,
                      "check policy manifests" if name == "validate" else "compile policies into a bundle")
        sub.add_argument("policies", type=Path, help="directory of policy manifests")
        sub.add_argument("--keys-file", type=Path, help="standalone keys file (hashes only)")
    render = commands.choices["render"]
    render.add_argument("--out", type=Path, help="write the bundle here instead of stdout")
    render.add_argument("--allow-errors", action="store_true", help="write the bundle even with errors")

    bundle = commands.add_parser("bundle", help="the policy bundle format").add_subparsers(
        dest="bundle_command", required=True, metavar="ACTION")
    command("schema", _bundle_schema, "print the bundle's JSON schema", bundle)

    crds = commands.add_parser("crds", help="the CustomResourceDefinitions").add_subparsers(
        dest="crds_command", required=True, metavar="ACTION")
    for name, handler in (("generate", _crds_generate), ("check", _crds_check)):
        sub = command(name, handler, f"{name} crds/ from the API types", crds)
        sub.add_argument("--out", type=Path, default=Path("crds"))

    keys = commands.add_parser("keys", help="standalone virtual keys").add_subparsers(
        dest="keys_command", required=True, metavar="ACTION")
    create = command("create", _keys_create, "issue a virtual key (printed once)", keys)
    create.add_argument("--developer", required=True)
    create.add_argument("--cost-center", required=True)
    create.add_argument("--name", help="key name (default: the developer)")
    revoke = command("revoke", _keys_revoke, "revoke a virtual key", keys)
    revoke.add_argument("--name", required=True)
    listing = command("list", _keys_list, "list keys (hash prefixes only)", keys)
    for sub in (create, revoke, listing):
        sub.add_argument("--keys-file", type=Path, required=True)

    for name, (module, help_text) in COMPONENT_COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(component=module)
        if name == requested:
            importlib.import_module(module).add_arguments(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(requested=arguments[0] if arguments else None)
    args = parser.parse_args(arguments)
    try:
        if getattr(args, "component", None):
            return int(importlib.import_module(args.component).run(args))
        return int(args.handler(args))
    except (UsageError, KeysFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `spendgate render ... | head` is not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps Python's exit-time flush quiet
        return 0


if __name__ == "__main__":
    sys.exit(main())
