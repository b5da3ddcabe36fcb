"""`spendgate validate | render | bundle schema | crds generate|check`: policies as files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from spendgate.adapters.policyfiles import compile_directory
from spendgate.api.crds import render_all, write_all
from spendgate.cli.common import Commands, command, group
from spendgate.policy.bundle import SignedBundle, dumps


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


def register(commands: Commands) -> None:
    for name, handler, help_text in (("validate", _validate, "check policy manifests"),
                                     ("render", _render, "compile policies into a bundle")):
        sub = command(commands, name, handler, help_text)
        sub.add_argument("policies", type=Path, help="directory of policy manifests")
        sub.add_argument("--keys-file", type=Path, help="standalone keys file (hashes only)")
        if name == "render":
            sub.add_argument("--out", type=Path, help="write the bundle here instead of stdout")
            sub.add_argument("--allow-errors", action="store_true", help="write the bundle even with errors")

    command(group(commands, "bundle", "the policy bundle format"), "schema", _bundle_schema,
            "print the bundle's JSON schema")

    crds = group(commands, "crds", "the CustomResourceDefinitions")
    for name, handler in (("generate", _crds_generate), ("check", _crds_check)):
        command(crds, name, handler, f"{name} crds/ from the API types").add_argument(
            "--out", type=Path, default=Path("crds"))
