"""Budget views from a spendgate gateway over HTTP, for `spendgate status` and `spendgate statusline`.

Light on purpose: the status line runs after every Claude Code turn, so this imports httpx and the
views' model, nothing of the rest of the command line.
"""

from __future__ import annotations

import argparse

import httpx
from pydantic import ValidationError

from spendgate.logic.budgetview import BudgetViews


class SourceError(Exception):
    """The gateway or the state directory could not be read; the message says which and why."""


def fetch(url: str, headers: dict[str, str], timeout: float) -> BudgetViews:
    """Budget views from a gateway; whatever goes wrong is one SourceError naming the URL."""
    try:
        response = httpx.get(url, headers=headers, timeout=timeout)
    except httpx.HTTPError as error:
        raise SourceError(f"cannot reach {url}: {error or type(error).__name__}") from None
    if response.status_code != 200:
        raise SourceError(f"{url} answered {response.status_code}: {_error_message(response)}")
    try:
        return BudgetViews.model_validate_json(response.content)
    except ValidationError as error:
        problem = error.errors()[0]
        where = ".".join(str(part) for part in problem["loc"]) or "the document"
        raise SourceError(f"{url} answered something that is not a list of budgets ({where}: {problem['msg']}); "
                          "is it a spendgate gateway?") from None


def _error_message(response: httpx.Response) -> str:
    """The message of an Anthropic-shaped error, else the start of the body."""
    try:
        return str(response.json()["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return response.text.strip()[:200] or "(empty)"


def seconds(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
