"""Who approved a merged policy change: GitHub's own review records turned into the approvals entry that
`spendgate audit export --approvals` reads (docs/operator.md, "Provenance and audit trail").

Pure: the pull request and its reviews come in as GitHub's REST API returns them (`GET
/repos/{owner}/{repo}/pulls/{number}`, or the `pull_request` of a `pull_request` event, and `GET
/repos/{owner}/{repo}/pulls/{number}/reviews`, one page or `gh api --paginate`'s pages one after the
other); one JSON object comes out, keyed by the revision Argo CD deploys (the merge commit).

What counts as an approval is what branch protection counts: each reviewer's latest review that takes
a position (APPROVED, CHANGES_REQUESTED or DISMISSED; a COMMENTED review changes nothing, a PENDING one
was never submitted), APPROVED, and on the commit that was merged (`commit_id` equal to the head: the
last push was approved). Approvals of an earlier push that were not dismissed are listed apart, as
`staleApprovers`: they approved other content.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

POSITIONS: Final = frozenset({"APPROVED", "CHANGES_REQUESTED", "DISMISSED"})
STATES: Final = POSITIONS | {"COMMENTED", "PENDING"}
DELETED_USER: Final = "ghost"  # GitHub's name for an account that no longer exists (`user` is null)


class ApprovalsInputError(ValueError):
    """A pull request or reviews document that is not what GitHub returns; the message says what is wrong."""


def json_documents(text: str, what: str) -> list[Any]:
    """Every JSON document in `text`, one after the other (`gh api --paginate` prints one array per page)."""
    decoder, documents, at = json.JSONDecoder(), [], 0
    while (at := _skip_space(text, at)) < len(text):
        try:
            document, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError as error:
            raise ApprovalsInputError(f"{what}: not JSON at line {error.lineno} column {error.colno}: "
                                      f"{error.msg}") from None
        documents.append(document)
    if not documents:
        raise ApprovalsInputError(f"{what}: empty (expected GitHub's JSON)")
    return documents


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def reviews_of(documents: Sequence[Any]) -> list[Mapping[str, Any]]:
    """The reviews of one or more pages, in GitHub's (chronological) order."""
    reviews: list[Mapping[str, Any]] = []
    for page, document in enumerate(documents, start=1):
        if not isinstance(document, list):
            raise ApprovalsInputError(f"reviews page {page}: expected a list of reviews (GET .../pulls/N/reviews), "
                                      f"got {_kind(document)}")
        for number, review in enumerate(document, start=1):
            reviews.append(_review(review, f"reviews page {page} item {number}"))
    return reviews


def pull_request_of(document: Any) -> Mapping[str, Any]:
    """The pull request of GET .../pulls/N, or of a `pull_request` event (whose `pull_request` it is)."""
    if isinstance(document, dict) and isinstance(document.get("pull_request"), dict):
        document = document["pull_request"]
    if not isinstance(document, dict):
        raise ApprovalsInputError(f"pull request: expected an object (GET .../pulls/N or a pull_request event), "
                                  f"got {_kind(document)}")
    for path in ("html_url", "head.sha", "user.login"):
        _at(document, path, "pull request")
    number = document.get("number")
    if type(number) is not int:
        raise ApprovalsInputError(f"pull request: number must be a whole number, got {_kind(number)}")
    for key in ("merged_at", "merge_commit_sha"):
        if not isinstance(document.get(key), str | None):
            raise ApprovalsInputError(f"pull request: {key} must be a string or null, got {_kind(document.get(key))}")
    return document


def approval_entry(pull: Mapping[str, Any], reviews: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The approvals entry of a merged pull request: its revision, link, who approved the merged head."""
    if not pull.get("merged_at") or not pull.get("merge_commit_sha"):
        raise ApprovalsInputError(f"pull request #{pull['number']} is not merged (merged_at and merge_commit_sha "
                                  "are empty): only a merged pull request approves a revision")
    head, author = _at(pull, "head.sha", "pull request"), _at(pull, "user.login", "pull request")
    latest: dict[str, Mapping[str, Any]] = {}
    for review in reviews:
        if review["state"] in POSITIONS:
            latest[_login(review)] = review
    approved = {login: review for login, review in latest.items() if review["state"] == "APPROVED" and login != author}
    merged_by = pull.get("merged_by")  # absent from a pull request listed rather than fetched
    return {
        "revision": pull["merge_commit_sha"],
        "pullRequest": pull["html_url"],
        "number": pull["number"],
        "author": author,
        "headSha": head,
        "mergedAt": pull["merged_at"],
        "mergedBy": merged_by.get("login") if isinstance(merged_by, dict) and isinstance(merged_by.get("login"), str)
        else None,
        "approvers": sorted(login for login, review in approved.items() if review.get("commit_id") == head),
        "staleApprovers": sorted(login for login, review in approved.items() if review.get("commit_id") != head),
    }


def _review(review: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(review, dict):
        raise ApprovalsInputError(f"{where}: expected a review object, got {_kind(review)}")
    state = review.get("state")
    if not isinstance(state, str) or state not in STATES:
        raise ApprovalsInputError(f"{where}: state must be one of {', '.join(sorted(STATES))}, got {state!r}")
    user = review.get("user")
    if user is not None and not (isinstance(user, dict) and isinstance(user.get("login"), str)):
        raise ApprovalsInputError(f"{where}: user must be an object with a login (or null), got {_kind(user)}")
    if not isinstance(review.get("commit_id"), str | None):
        raise ApprovalsInputError(f"{where}: commit_id must be a commit SHA (or null), got "
                                  f"{_kind(review.get('commit_id'))}")
    return review


def _login(review: Mapping[str, Any]) -> str:
    user = review.get("user")
    return str(user["login"]) if user else DELETED_USER


def _at(document: Mapping[str, Any], path: str, what: str) -> Any:
    value: Any = document
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    if not isinstance(value, str) or not value:
        raise ApprovalsInputError(f"{what}: {path} must be a non-empty string, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"{type(value).__name__} {str(value)[:40]!r}"
