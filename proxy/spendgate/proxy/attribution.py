"""Who pays for a request, and what it was for. Pure functions; docs/proxy.md lists the headers.

Identity (developer, cost center) comes only from the virtual key, never from a header. Repository,
branch, session, request class and agent id are tags the client sends; they go to the ledger, they
never grant or move money. The session id comes from, in order: the `x-claude-code-session-id`
header (Claude Code >= 2.1.86), the JSON `metadata.user_id` (>= 2.1.78), the legacy
`..._session_<uuid>` form of `metadata.user_id`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson

from spendgate.logic.repository import normalize_repository
from spendgate.policy.bundle import KeyEntry
from spendgate.proxy.errors import ProxyError

SESSION_HEADER: Final = b"x-claude-code-session-id"
REQUEST_CLASS_HEADER: Final = b"x-claude-code-request-class"
AGENT_ID_HEADER: Final = b"x-claude-code-agent-id"
# Set per repository with ANTHROPIC_CUSTOM_HEADERS in the project's .claude/settings.json.
REPO_HEADER: Final = b"x-spendgate-repo"
BRANCH_HEADER: Final = b"x-spendgate-branch"
TAG_HEADERS: Final = frozenset({SESSION_HEADER, REQUEST_CLASS_HEADER, AGENT_ID_HEADER, REPO_HEADER, BRANCH_HEADER})
# Tags come from clients: bounded so one odd client cannot bloat every ledger line.
MAX_TAG_LENGTH: Final = 256
LEGACY_SESSION = re.compile(r"_session_([0-9a-fA-F-]{36})$")


@dataclass(frozen=True, slots=True)
class Identity:
    key_name: str
    developer: str
    cost_center: str


@dataclass(frozen=True, slots=True)
class Attribution:
    identity: Identity
    repo: str | None = None
    branch: str | None = None
    session: str | None = None
    session_source: str | None = None  # header, metadata, legacy-metadata
    request_class: str | None = None
    agent_id: str | None = None


def credential(api_key: bytes | None, authorization: bytes | None) -> bytes | None:
    """The virtual key, from `x-api-key` or `Authorization: Bearer` (Claude Code sends either, or both)."""
    if api_key:
        return api_key
    if authorization and authorization[:7].lower() == b"bearer ":
        return authorization[7:].strip() or None
    return None


def identities(keys: Iterable[KeyEntry]) -> dict[str, Identity]:
    """The owners of the keys in force by key hash, built once per bundle (rotated-out keys, which
    expire, are looked up through their entry instead, so this map needs no clock)."""
    return {entry.hash: _identity(entry) for entry in keys if not entry.revoked and entry.expiresAt is None}


def _identity(entry: KeyEntry) -> Identity:
    return Identity(key_name=entry.name, developer=entry.developer, cost_center=entry.costCenter)


def identify(key: bytes | None, owners: Mapping[str, Identity], keys: Mapping[str, KeyEntry],
             now: datetime) -> Identity:
    """The key's owner; a missing, unknown, revoked or expired key is a 401 that never echoes the key."""
    if key is None:
        raise ProxyError("authentication_error", "missing virtual key: send it as x-api-key or Authorization: Bearer")
    digest = hashlib.sha256(key).hexdigest()
    owner = owners.get(digest)
    if owner is not None:
        return owner
    entry = keys.get(digest)
    if entry is None:
        raise ProxyError("authentication_error", "invalid virtual key")
    if entry.revoked:
        raise ProxyError("authentication_error", f"virtual key {entry.name!r} has been revoked")
    if not entry.expired(now):  # a rotated-out key in its grace period
        return _identity(entry)
    raise ProxyError("authentication_error",
                     f"virtual key {entry.name!r} was rotated and this key expired at {entry.expiresAt}; "
                     "use the new key")


def _tag(value: bytes | None) -> str | None:
    if not value:
        return None
    return value.decode("utf-8", "replace").strip()[:MAX_TAG_LENGTH] or None


def _repository(value: bytes | None) -> str | None:
    tag = _tag(value)
    return normalize_repository(tag) if tag else None


def session_from_user_id(user_id: Any) -> tuple[str, str] | None:
    """(session id, source) from `metadata.user_id`: a JSON string (>= 2.1.78) or the legacy form."""
    if not isinstance(user_id, str) or not user_id:
        return None
    if user_id[0] == "{":
        try:
            parsed = orjson.loads(user_id)
        except orjson.JSONDecodeError:
            return None
        session = parsed.get("session_id") if isinstance(parsed, dict) else None
        return (session[:MAX_TAG_LENGTH], "metadata") if isinstance(session, str) and session else None
    legacy = LEGACY_SESSION.search(user_id)
    return (legacy.group(1), "legacy-metadata") if legacy else None


def attribute(identity: Identity, tags: Mapping[bytes, bytes], user_id: Any) -> Attribution:
    session = _tag(tags.get(SESSION_HEADER))
    found = (session, "header") if session else session_from_user_id(user_id)
    return Attribution(
        identity=identity,
        repo=_repository(tags.get(REPO_HEADER)),
        branch=_tag(tags.get(BRANCH_HEADER)),
        session=found[0] if found else None,
        session_source=found[1] if found else None,
        request_class=_tag(tags.get(REQUEST_CLASS_HEADER)),
        agent_id=_tag(tags.get(AGENT_ID_HEADER)),
    )
