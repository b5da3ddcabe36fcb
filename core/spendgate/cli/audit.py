"""`spendgate audit verify | export | approvals`: check the operator's tamper-evident audit log, write the
evidence an auditor asks for per policy change, and turn GitHub's review records of a merged pull request
into the approvals entry that evidence joins by revision. Exit status 1 when the chain does not verify, or
when a merged pull request had no approval of its last push."""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spendgate.adapters.auditlog import DEFAULT_LOG, AuditLogError, StoredLog, read_cluster_log, read_file_log
from spendgate.cli import output
from spendgate.cli.common import OPERATOR_NAMESPACE, Commands, UsageError, command, group, kubernetes_arguments
from spendgate.logic import approvals, audit
from spendgate.logic.audit import Checkpoint, Verification

REPORT_COLUMNS = ("time", "object", "change", "revision", "via", "approvers", "pullRequest", "digestAfter",
                  "breakGlass")
TERMINAL_COLUMNS = ("time", "object", "change", "revision", "via", "approvers", "breakGlass")  # fits 160 columns
PERIOD = r"^[0-9]{4}-(0[1-9]|1[0-2])$"


def _stored(args: argparse.Namespace) -> StoredLog:
    try:
        if args.file is not None:
            return read_file_log(args.file)
        return read_cluster_log(args.namespace, args.log, args.kubeconfig, args.context)
    except AuditLogError as error:
        raise UsageError(str(error)) from error


def _checkpoints(args: argparse.Namespace, stored: StoredLog) -> list[Checkpoint]:
    given = [_checkpoint(text) for text in args.checkpoint or []]
    return [*stored.checkpoints, *given]


def _checkpoint(text: str) -> Checkpoint:
    records, _, head = text.partition(":")
    if not records.isdigit() or not head.startswith("sha256:"):
        raise UsageError(f"--checkpoint {text!r}: expected RECORDS:sha256:HEX, as `spendgate audit verify` prints")
    return Checkpoint(int(records), head, "--checkpoint")


def summary(stored: StoredLog, result: Verification) -> str:
    newest = max(stored.checkpoints, key=lambda c: c.records, default=None)
    checked = (f"{result.checkpoints_matched} of {len(stored.checkpoints)} stored checkpoints match"
               + (f" (newest: {newest.records} records at {newest.time})" if newest else "")
               if stored.checkpoints else "no stored checkpoints (pass --checkpoint to check one you kept)")
    state = "chain intact" if result.ok else f"{len(result.problems)} problems"
    return (f"{stored.where}: {result.records} records in {len(stored.segments)} segments, "
            f"head {result.records}:{result.head}; {state}; {checked}")


def _verify(args: argparse.Namespace) -> int:
    stored = _stored(args)
    result = audit.verify(stored.records, _checkpoints(args, stored))
    print(summary(stored, result))
    for problem in result.problems:
        print(f"  {problem}")
    return 0 if result.ok else 1


def _export(args: argparse.Namespace) -> int:
    stored = _stored(args)
    result = audit.verify(stored.records, _checkpoints(args, stored))
    records = [record for record in stored.records if isinstance(record, dict)]
    if args.output == "jsonl":  # the verifiable prefix: every record up to the end of the period
        for record in records:
            if str(record.get("time", ""))[:7] <= args.period:
                print(json.dumps(record, sort_keys=True))
        return 0 if result.ok else 1
    rows = audit.evidence(records, args.period, _approvals(args.approvals))
    report = {"period": args.period, "log": stored.where, "summary": summary(stored, result),
              "verified": result.ok, "problems": result.problems, "changes": rows,
              "enforcement": _enforcement(records, args.period)}
    sys.stdout.write(_csv(rows) if args.output == "csv" else output.render(_document(report, args.output), args.output))
    return 0 if result.ok else 1


def _document(report: Mapping[str, Any], shown: str) -> output.Document:
    changes = report["changes"]
    glass = [row for row in changes if row["breakGlass"] != "no"]
    verdict = "verified" if report["verified"] else "DOES NOT VERIFY"
    counts = ", ".join(f"{state}: {count}" for state, count in report["enforcement"].items()) or "none"
    columns = TERMINAL_COLUMNS if shown == "table" else REPORT_COLUMNS
    return output.Document(
        summary=f"{len(changes)} policy changes in {report['period']}, {len(glass)} break-glass; audit log {verdict}",
        facts=[report["summary"], *report["problems"], f"enforcement transitions: {counts}"],
        sections=[output.Section("policy changes", output.Table(columns, [[row[c] for c in columns]
                                                                          for row in changes]))],
        data=report)


def _enforcement(records: Sequence[Mapping[str, Any]], period: str) -> dict[str, int]:
    """How often budgets reached each state (and windows reset) in the period."""
    counted: Counter[str] = Counter()
    for record in records:
        if str(record.get("time", "")).startswith(period):
            if record.get("type") == audit.ENFORCEMENT:
                counted[str(record.get("stateAfter"))] += 1
            elif record.get("type") == audit.WINDOW_RESET:
                counted["reset"] += 1
    return dict(sorted(counted.items()))


def _approvals(path: Path | None) -> dict[str, dict[str, Any]]:
    """What the CI recorded per merged revision: JSON lines of {revision, pullRequest, approvers}."""
    if path is None:
        return {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        entries = [json.loads(line) for line in lines if line.strip()]
        return {str(entry["revision"]): entry for entry in entries}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise UsageError(f"{path}: not an approvals file (JSON lines of revision, pullRequest, approvers): "
                         f"{type(error).__name__}: {error}") from error


def _record_approvals(args: argparse.Namespace) -> int:
    """One approvals entry (a JSON line) from GitHub's records of a merged pull request; exit 1 when nobody
    approved the merged head (the entry still says so: that is evidence too)."""
    try:
        pulls = approvals.json_documents(_read(args.pull_request), f"--pull-request {args.pull_request}")
        if len(pulls) != 1:
            raise approvals.ApprovalsInputError(f"--pull-request {args.pull_request}: expected one pull request, "
                                                f"got {len(pulls)} JSON documents")
        pull = approvals.pull_request_of(pulls[0])
        reviews = approvals.reviews_of(approvals.json_documents(_read(args.reviews), f"--reviews {args.reviews}"))
        entry = approvals.approval_entry(pull, reviews)
    except approvals.ApprovalsInputError as error:
        raise UsageError(str(error)) from None
    print(json.dumps(entry))
    if entry["approvers"]:
        return 0
    print(f"warning: {entry['pullRequest']} was merged as {entry['revision']} without an approval of its last push "
          f"{entry['headSha']}", file=sys.stderr)
    return 1


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{path}: cannot be read: {error}") from None


def _csv(rows: Sequence[Mapping[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=audit.EVIDENCE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _period(text: str) -> str:
    if not re.match(PERIOD, text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a month like 2026-11")
    return text


def register(commands: Commands) -> None:
    audit_commands = group(commands, "audit", "the operator's tamper-evident audit log")
    verify = command(audit_commands, "verify", _verify,
                     "check the hash chain and the checkpoints: edited, dropped, inserted, reordered or cut-off "
                     "records make the exit status 1")
    export = command(audit_commands, "export", _export,
                     "write the evidence per policy change in a month: revision, approvers, digests, break-glass")
    export.add_argument("--period", type=_period, required=True, help="a calendar month, UTC, e.g. 2026-11")
    export.add_argument("--output", "-o", choices=(*output.FORMATS, "csv", "jsonl"), default="table",
                        help="markdown (for a report), json, table, csv (one row per change), or jsonl: the raw "
                             "records up to the end of the period, verifiable offline (default table)")
    export.add_argument("--approvals", type=Path, help="what the CI recorded: JSON lines of revision, pullRequest, "
                                                       "approvers (docs/operator.md)")
    record = command(audit_commands, "approvals", _record_approvals,
                     "the approvals entry of a merged pull request (a JSON line for --approvals) from GitHub's "
                     "pull request and reviews; exit 1 when nobody approved its last push")
    record.add_argument("--pull-request", type=Path, required=True, metavar="FILE",
                        help="GET /repos/OWNER/REPO/pulls/N, or the pull_request event ($GITHUB_EVENT_PATH)")
    record.add_argument("--reviews", type=Path, required=True, metavar="FILE",
                        help="GET /repos/OWNER/REPO/pulls/N/reviews (gh api --paginate's pages one after another)")
    for sub in (verify, export):
        where = sub.add_argument_group("where the log is (one of)")
        where.add_argument("--namespace", default=OPERATOR_NAMESPACE,
                           help="the operator's namespace (default: %(default)s)")
        where.add_argument("--log", default=DEFAULT_LOG, help="the AuditLog's name (default: %(default)s)")
        kubernetes_arguments(where)
        where.add_argument("--file", type=Path, help="an exported log (export --output jsonl) instead of a cluster")
        sub.add_argument("--checkpoint", action="append", metavar="RECORDS:HASH",
                         help="a checkpoint you kept (as verify prints it), checked too; repeatable")
