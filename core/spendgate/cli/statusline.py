"""`spendgate statusline`: one line for Claude Code's `statusLine` setting.

The developer's fullest budget, read from the gateway with their own virtual key (`GET
/spendgate/v1/budgets`), from the environment Claude Code gives the command: ANTHROPIC_BASE_URL,
ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN, and ANTHROPIC_CUSTOM_HEADERS for the repository tag.
It runs after every turn, so `spendgate statusline` imports only this module (cli/__init__.py).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final

from spendgate.cli.budgetsource import SourceError, fetch, seconds
from spendgate.cli.common import Commands, command
from spendgate.logic.budgetview import status_line

OWN_BUDGETS: Final = "/spendgate/v1/budgets"
TAG_HEADERS: Final = ("x-spendgate-repo",)  # the tags that decide which budgets cover the developer


def _statusline(args: argparse.Namespace) -> int:
    """One line on stdout whatever happens (Claude Code shows the first line of what the command
    prints); exit 1 when it is an error."""
    try:
        views = fetch(*own_request(args.gateway, os.environ), timeout=args.timeout)
    except SourceError as error:
        print(f"spendgate: {error}")
        return 1
    print(status_line(views, datetime.now().astimezone().tzinfo or UTC))
    return 0


def own_request(gateway: str | None, environ: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The URL and headers of the developer's own budget request, from Claude Code's environment."""
    base = gateway or environ.get("ANTHROPIC_BASE_URL")
    if not base:
        raise SourceError("ANTHROPIC_BASE_URL is not set (or pass --gateway URL): which gateway?")
    headers = {}
    if environ.get("ANTHROPIC_API_KEY"):
        headers["x-api-key"] = environ["ANTHROPIC_API_KEY"]
    if environ.get("ANTHROPIC_AUTH_TOKEN"):
        headers["authorization"] = f"Bearer {environ['ANTHROPIC_AUTH_TOKEN']}"
    if not headers:
        raise SourceError("no virtual key: set ANTHROPIC_API_KEY or ANTHROPIC_AUTH_TOKEN")
    for line in environ.get("ANTHROPIC_CUSTOM_HEADERS", "").splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() in TAG_HEADERS and value.strip():
            headers[name.strip().lower()] = value.strip()
    return base.rstrip("/") + OWN_BUDGETS, headers


def register(commands: Commands) -> None:
    line = command(commands, "statusline", _statusline,
                   "one line for Claude Code's statusLine: your fullest budget, read with your virtual key")
    line.add_argument("--gateway", metavar="URL", help="default: $ANTHROPIC_BASE_URL")
    line.add_argument("--timeout", type=seconds, default=2.0, metavar="SECONDS",
                      help="for the gateway's answer (default %(default)s)")
