"""`spendgate keys create | rotate | revoke | list`: virtual keys in a standalone keys file
(`--keys-file`) or as key Secrets in a cluster (`--namespace`, the operator's)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from spendgate.adapters.keystores import ClusterKeys, FileKeys, KeyInfo, KeyStore
from spendgate.cli import output
from spendgate.cli.common import OPERATOR_NAMESPACE, Commands, command, duration, group, kubernetes_arguments
from spendgate.logic.windows import rfc3339


def _store(args: argparse.Namespace) -> KeyStore:
    if args.keys_file is not None:
        return FileKeys(args.keys_file)
    return ClusterKeys(args.namespace, args.kubeconfig, args.context)


def _shown_once(args: argparse.Namespace, plaintext: str, note: str, record: dict[str, str]) -> int:
    """The plaintext goes to stdout alone (or in the JSON object), everything else to stderr."""
    if args.output == "json":
        print(json.dumps({**record, "key": plaintext}, sort_keys=True))
    else:
        print(plaintext)
        print(f"# {note}; this is the only time the key is shown", file=sys.stderr)
    return 0


def _create(args: argparse.Namespace) -> int:
    store, name = _store(args), args.name or args.developer
    plaintext = store.create(name, args.developer, args.cost_center)
    return _shown_once(args, plaintext, f"key {name!r} for {args.developer} ({args.cost_center}) added to "
                       f"{store.describe()}", {"name": name, "developer": args.developer,
                                               "costCenter": args.cost_center, "store": store.describe()})


def _rotate(args: argparse.Namespace) -> int:
    store, now = _store(args), datetime.now(UTC)
    plaintext = store.rotate(args.name, args.grace, now)
    until = rfc3339(now + args.grace)
    return _shown_once(args, plaintext, f"key {args.name!r} rotated in {store.describe()}; the old key works "
                       f"until {until}", {"name": args.name, "previousKeyExpiresAt": until,
                                          "store": store.describe()})


def _revoke(args: argparse.Namespace) -> int:
    store = _store(args)
    store.revoke(args.name)
    if args.output == "json":
        print(json.dumps({"name": args.name, "revoked": True, "store": store.describe()}, sort_keys=True))
    else:
        print(f"revoked {args.name!r} in {store.describe()}")
    return 0


def _list(args: argparse.Namespace) -> int:
    rows = _store(args).list(datetime.now(UTC))
    if args.output == "json":
        print(json.dumps([asdict(row) for row in rows], indent=2, sort_keys=True))
    else:
        Console(width=160).print(output.rich_table(_table(rows)))
    return 0


def _table(rows: list[KeyInfo]) -> output.Table:
    columns = ("NAME", "DEVELOPER", "COST CENTER", "STATE", "EXPIRES", "SHA-256")
    return output.Table(columns, [[row.name, row.developer, row.costCenter, row.state, row.expiresAt or "",
                                   row.hash[:12] and f"{row.hash[:12]}..."] for row in rows])


def register(commands: Commands) -> None:
    keys = group(commands, "keys", "virtual keys: in a keys file (standalone) or as Secrets in a cluster")
    create = command(keys, "create", _create, "issue a virtual key (printed once)")
    create.add_argument("--developer", required=True)
    create.add_argument("--cost-center", required=True)
    create.add_argument("--name", help="key name (default: the developer); in a cluster, the Secret's name")
    rotate = command(keys, "rotate", _rotate, "replace a key with a new one (printed once); the old one keeps "
                                              "working for --grace")
    rotate.add_argument("--name", required=True)
    rotate.add_argument("--grace", type=duration, default=duration("24h"),
                        help="how long the old key keeps working, e.g. 30m, 24h, 7d, 0 (default: 24h)")
    revoke = command(keys, "revoke", _revoke, "revoke a virtual key (and a rotated-out one still in its grace)")
    revoke.add_argument("--name", required=True)
    listing = command(keys, "list", _list, "list keys (hashes only, never a key)")
    for sub in (create, rotate, revoke, listing):
        where = sub.add_argument_group("where the keys are (one of)")
        where.add_argument("--keys-file", type=Path, help="a standalone keys file (hashes only)")
        where.add_argument("--namespace", default=OPERATOR_NAMESPACE,
                           help="in a cluster: the operator's namespace, where key Secrets live (default: "
                                "%(default)s); used when --keys-file is not given")
        kubernetes_arguments(where)
        sub.add_argument("--output", choices=("text", "json"), default="text",
                         help="json: one JSON document on stdout, for scripts")

