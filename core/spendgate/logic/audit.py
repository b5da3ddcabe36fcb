"""The tamper-evident audit log, pure: records, their hash chain, verification, checkpoints.

Each record is a JSON object carrying its position (`seq`, from 0), the hash of the record before
it (`prev`; the first record's is GENESIS) and its own hash: SHA-256 over the canonical JSON
(sorted keys, no whitespace) of every field but `hash`. So editing a record breaks its hash;
dropping, inserting or reordering records breaks `seq` and `prev`; and rewriting the log from some
point on, hashes and all, or cutting its tail off, no longer matches a checkpoint (the record count
and head hash at some moment), which is kept where the log's writers cannot write (docs/operator.md).

Records never carry a secret: they are built from specs and metadata, which hold none, and free
text a person typed (a break-glass reason) is scrubbed of anything that looks like a key.
Storage is an adapter's business (spendgate.adapters.auditlog); nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from spendgate.logic.windows import rfc3339

GENESIS: Final = "sha256:" + "0" * 64
HASH_PATTERN: Final = r"^sha256:[0-9a-f]{64}$"
# Record types.
POLICY_CHANGE, BREAK_GLASS, ENFORCEMENT, WINDOW_RESET = "policy-change", "break-glass", "enforcement", "window-reset"
# Anthropic keys (sk-ant-...), spendgate virtual keys (sk-sg-...), bearer tokens: never in a record.
KEYLIKE = re.compile(r"(sk-(?:ant|sg)-[A-Za-z0-9_\-]{4,}|[Bb]earer\s+\S{8,}|eyJ[A-Za-z0-9_\-]{20,}\.[A-Za-z0-9_.\-]+)")
REDACTED: Final = "[redacted]"


def canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(data: Any) -> str:
    """SHA-256 of a JSON value's canonical form, e.g. of a spec: equal specs, equal digests."""
    return "sha256:" + hashlib.sha256(canonical(data)).hexdigest()


def scrub(text: str | None) -> str | None:
    """Free text with anything that looks like a key or token replaced."""
    return KEYLIKE.sub(REDACTED, text) if text else text


@dataclass(frozen=True)
class Head:
    """Where the log stands: how many records, and the hash of the last one."""

    records: int = 0
    hash: str = GENESIS


@dataclass(frozen=True)
class Checkpoint:
    """A Head seen at some instant, stored apart from the log (in the AuditLog's status)."""

    records: int
    head: str
    time: str


def record_hash(record: Mapping[str, Any]) -> str:
    return digest({key: value for key, value in record.items() if key != "hash"})


def chain(entries: Iterable[Mapping[str, Any]], head: Head) -> list[dict[str, Any]]:
    """Number and link new entries after `head`: each gets `seq`, `prev` and `hash`."""
    chained: list[dict[str, Any]] = []
    previous, seq = head.hash, head.records
    for entry in entries:
        record = {**{k: v for k, v in entry.items() if k not in ("seq", "prev", "hash")}, "seq": seq, "prev": previous}
        record["hash"] = record_hash(record)
        chained.append(record)
        previous, seq = record["hash"], seq + 1
    return chained


def head_of(records: Sequence[Mapping[str, Any]], start: Head | None = None) -> Head:
    if not records:
        return start or Head()
    return Head(int(records[-1]["seq"]) + 1, str(records[-1]["hash"]))


@dataclass
class Verification:
    records: int = 0
    head: str = GENESIS
    problems: list[str] = field(default_factory=list)
    checkpoints_matched: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(records: Iterable[Any], checkpoints: Sequence[Checkpoint] = ()) -> Verification:
    """Walk the whole log; report every place where the chain breaks, then check the checkpoints.

    Problems name the record (its position in the log, counting from 0) and what the break means:
    an edited record, records dropped, inserted or reordered, a tail cut off, a rewritten log."""
    result = Verification()
    expected_prev: str | None = GENESIS
    hashes: list[str | None] = []
    for position, record in enumerate(records):
        problem = _malformed(record)
        if problem:
            result.problems.append(f"record {position}: {problem}")
            expected_prev = None  # nothing after a malformed record can be linked
            hashes.append(None)
            continue
        seq, prev, claimed = record["seq"], record["prev"], record["hash"]
        if record_hash(record) != claimed:
            result.problems.append(f"record {position} (seq {seq}): content does not match its hash: edited")
        if seq != position:
            what = "dropped before it" if seq > position else "inserted or reordered"
            result.problems.append(f"record {position} has seq {seq}: records {what}")
        elif expected_prev is not None and prev != expected_prev:
            result.problems.append(f"record {position} (seq {seq}) does not follow record {position - 1}: "
                                   "a record was dropped, inserted, reordered or rewritten")
        expected_prev = claimed
        hashes.append(claimed)
    result.records = len(hashes)
    result.head = hashes[-1] if hashes and hashes[-1] else GENESIS
    for checkpoint in checkpoints:
        problem = _against(checkpoint, hashes)
        if problem:
            result.problems.append(problem)
        else:
            result.checkpoints_matched += 1
    return result


def _malformed(record: Any) -> str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    missing = [name for name in ("seq", "prev", "hash", "type", "time") if name not in record]
    if missing:
        return f"missing {', '.join(missing)}"
    if not isinstance(record["seq"], int) or isinstance(record["seq"], bool):
        return "seq is not an integer"
    if not all(isinstance(record[name], str) and re.match(HASH_PATTERN, record[name]) for name in ("prev", "hash")):
        return "prev or hash is not a sha256 digest"
    return None


def _against(checkpoint: Checkpoint, hashes: Sequence[str | None]) -> str | None:
    if checkpoint.records > len(hashes):
        return (f"the log ends after {len(hashes)} records, but at {checkpoint.time} it had {checkpoint.records}: "
                "its tail was cut off")
    if checkpoint.records and hashes[checkpoint.records - 1] != checkpoint.head:
        return (f"record {checkpoint.records - 1} is not the one the checkpoint of {checkpoint.time} names: "
                "the log was rewritten")
    return None


# -- the records ---------------------------------------------------------------------------------


def subject(kind: str, namespace: str | None, name: str, uid: str | None = None) -> dict[str, str]:
    described = {"kind": kind, "name": name}
    if namespace:
        described["namespace"] = namespace
    if uid:
        described["uid"] = uid
    return described


def _record(record_type: str, time: datetime, about: Mapping[str, str], record_id: str,
            **fields: Any) -> dict[str, Any]:
    return {"type": record_type, "time": rfc3339(time), "subject": dict(about), "id": record_id,
            **{name: value for name, value in fields.items() if value is not None}}


@dataclass(frozen=True)
class BreakGlass:
    """Who bypassed GitOps and why, as the break-glass annotation says (`<user>: <reason>`)."""

    user: str
    reason: str

    @classmethod
    def parse(cls, annotation: str | None) -> BreakGlass | None:
        if not annotation:
            return None
        user, _, reason = annotation.partition(": ")
        return cls(user=user.strip(), reason=scrub(reason.strip()) or "")

    def as_json(self) -> dict[str, str]:
        return {"user": self.user, "reason": self.reason}


@dataclass(frozen=True)
class PolicyChange:
    """A spec the operator saw change (or appear, or go), and where it came from."""

    change: str  # created, updated, observed (first seen, history unknown), deleted
    generation: int
    digest_before: str | None
    digest_after: str | None
    revision: str | None = None
    application: str | None = None
    by: str | None = None  # the field manager that last wrote the spec
    sync: Mapping[str, str] | None = None  # the Argo CD operation: initiatedBy, startedAt, phase
    approvals: Mapping[str, Any] | None = None  # what the pipeline recorded: pullRequest, approvers
    break_glass: BreakGlass | None = None


def policy_change(time: datetime, about: Mapping[str, str], change: PolicyChange) -> dict[str, Any]:
    record_id = f"{about.get('uid', about['name'])}:{change.generation}:{change.change}:{change.revision or ''}"
    return _record(POLICY_CHANGE, time, about, record_id, change=change.change, generation=change.generation,
                   digestBefore=change.digest_before, digestAfter=change.digest_after, revision=change.revision,
                   application=change.application, by=scrub(change.by),
                   sync={k: scrub(v) for k, v in change.sync.items()} if change.sync else None,
                   approvals=change.approvals or None,
                   breakGlass=change.break_glass.as_json() if change.break_glass else None)


def break_glass_use(time: datetime, about: Mapping[str, str], use: BreakGlass, generation: int,
                    annotation_digest: str) -> dict[str, Any]:
    """A break-glass write that left the spec as it was (labels, annotations)."""
    return _record(BREAK_GLASS, time, about, f"{about.get('uid', about['name'])}:break-glass:{annotation_digest}",
                   generation=generation, breakGlass=use.as_json())


def enforcement(time: datetime, about: Mapping[str, str], generation: int, window: str, before: str, after: str,
                spent: str | None, limit: str, mode: str) -> dict[str, Any]:
    """A Budget's state changed (Ok, Alert, Downgrade, Paused). One state is reached at most once per
    (spec, window) going up, since spend only grows within a window; going down needs a new spec."""
    record_id = f"{about.get('uid', about['name'])}:{generation}:{window}:{before}->{after}"
    return _record(ENFORCEMENT, time, about, record_id, generation=generation, window=window, stateBefore=before,
                   stateAfter=after, spentUSD=spent, limitUSD=limit, enforcement=mode)


def window_reset(time: datetime, about: Mapping[str, str], closed: str, spent: str | None, opened: str,
                 state_before: str | None) -> dict[str, Any]:
    record_id = f"{about.get('uid', about['name'])}:reset:{closed}->{opened}"
    return _record(WINDOW_RESET, time, about, record_id, windowClosed=closed, spentUSD=spent, windowOpened=opened,
                   stateBefore=state_before)


# -- evidence for auditors ---------------------------------------------------------------------------


EVIDENCE_COLUMNS: Final = ("time", "object", "change", "revision", "via", "approvers", "pullRequest",
                           "digestBefore", "digestAfter", "breakGlass")


def evidence(records: Iterable[Mapping[str, Any]], period: str,
             approvals: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, str]]:
    """One row per policy change or break-glass use in a calendar month (`2026-11`, UTC): what an
    auditor samples for change management (who approved, what was deployed, was GitOps bypassed).
    Approvals come from the record (annotations the pipeline stamped) or else from `approvals`,
    what the CI recorded per merged revision."""
    rows = []
    for record in records:
        if record.get("type") not in (POLICY_CHANGE, BREAK_GLASS) or not str(record.get("time", "")).startswith(period):
            continue
        about, glass = record.get("subject") or {}, record.get("breakGlass")
        approved = record.get("approvals") or (approvals or {}).get(str(record.get("revision") or "")) or {}
        via = f"Argo CD {record['application']}" if record.get("application") else str(record.get("by") or "unknown")
        rows.append({
            "time": str(record["time"]),
            "object": "/".join(str(part) for part in (about.get("kind"), about.get("namespace"), about.get("name"))
                               if part),
            "change": str(record.get("change") or "break-glass (metadata only)"),
            "revision": str(record.get("revision") or ""),
            "via": via,
            "approvers": ", ".join(str(a) for a in approved.get("approvers") or []),
            "pullRequest": str(approved.get("pullRequest") or ""),
            "digestBefore": str(record.get("digestBefore") or ""),
            "digestAfter": str(record.get("digestAfter") or ""),
            "breakGlass": f"yes: {glass['user']}: {glass['reason']}" if glass else "no",
        })
    return rows
