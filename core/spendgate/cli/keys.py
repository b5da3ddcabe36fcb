"""`spendgate keys create | revoke | list`: virtual keys in a standalone keys file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spendgate.adapters.keysfile import create_key, read_keys_file, revoke_key
from spendgate.cli.common import Commands, command, group


def _create(args: argparse.Namespace) -> int:
    name = args.name or args.developer
    plaintext = create_key(args.keys_file, name=name, developer=args.developer, cost_center=args.cost_center)
    print(plaintext)
    print(f"# key {name!r} for {args.developer} ({args.cost_center}) added to {args.keys_file}; "
          "this is the only time the key is shown", file=sys.stderr)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    revoke_key(args.keys_file, args.name)
    print(f"revoked {args.name!r} in {args.keys_file}")
    return 0


def _list(args: argparse.Namespace) -> int:
    for key in read_keys_file(args.keys_file).keys:
        state = "revoked" if key.revoked else "active"
        print(f"{key.name}\t{key.developer}\t{key.costCenter}\t{state}\tsha256:{key.hash[:12]}")
    return 0


def register(commands: Commands) -> None:
    keys = group(commands, "keys", "standalone virtual keys")
    create = command(keys, "create", _create, "issue a virtual key (printed once)")
    create.add_argument("--developer", required=True)
    create.add_argument("--cost-center", required=True)
    create.add_argument("--name", help="key name (default: the developer)")
    revoke = command(keys, "revoke", _revoke, "revoke a virtual key")
    revoke.add_argument("--name", required=True)
    listing = command(keys, "list", _list, "list keys (hash prefixes only)")
    for sub in (create, revoke, listing):
        sub.add_argument("--keys-file", type=Path, required=True)
