"""`spendgate dry-run --base BASE --head HEAD --ledger PATH...`: replay recorded traffic through both policy
sets and report what the change would have done, for a pull-request comment, a machine or a terminal.

Exit status: 0 the replay ran and no failure rule tripped; 1 a --fail-if rule tripped (the summary
says which); 2 bad input (a policy side that does not compile, an unreadable ledger, bad lines
without --skip-bad-lines, bad arguments).
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from spendgate.adapters.ledgerfiles import LedgerError, read_ledgers
from spendgate.cli.common import Commands, UsageError, command
from spendgate.cli.diff import add_source_arguments, open_both
from spendgate.cli.output import Chart, Document, Section, Table, add_output_flag, render
from spendgate.logic.dryrun import (
    BudgetReport,
    DryRun,
    DryRunReport,
    Impact,
    days_between,
    is_daily,
    window_to_date,
)
from spendgate.logic.policydiff import diff_bundles, short_names
from spendgate.logic.replay import THRESHOLD_STATES
from spendgate.logic.spend import format_usd

CHARTS = 3
DURATION = re.compile(r"([0-9]+)([dh])")


def _dry_run(args: argparse.Namespace) -> int:
    base, head = open_both(args)
    try:
        contents = read_ledgers(args.ledger, skip_bad_lines=args.skip_bad_lines)
    except LedgerError as error:
        raise UsageError(str(error)) from None
    for problem in contents.skipped:
        print(f"warning: skipped {problem}", file=sys.stderr)
    records = contents.records
    if args.since is not None and records:
        since = _since(args.since, records[-1].time)
        records = [record for record in records if record.time >= since]
    replay = DryRun(base.result.bundle.bundle, head.result.bundle.bundle)
    replay.feed(records)
    report = replay.report()
    failures = _failures(args, report)
    changes = [str(c) for c in diff_bundles(base.result.bundle.bundle, head.result.bundle.bundle)]
    document = dry_run_document(report, base.label, head.label, changes, len(contents.skipped), failures, args.top)
    sys.stdout.write(render(document, args.output))
    return 1 if failures else 0


def _since(text: str, newest: datetime) -> datetime:
    """`30d` / `12h` before the newest record (reproducible: no clock), or a date or time."""
    relative = DURATION.fullmatch(text)
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2)
        return newest - (timedelta(days=amount) if unit == "d" else timedelta(hours=amount))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--since {text!r}: give 30d, 12h, a date (2026-11-01) or an RFC 3339 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _failures(args: argparse.Namespace, report: DryRunReport) -> list[str]:
    failures = []
    paused = len(report.newly_paused_developers)
    if args.fail_if_paused_developers is not None and paused > args.fail_if_paused_developers:
        failures.append(f"{paused} developers newly paused (more than {args.fail_if_paused_developers})")
    downgraded = report.changes.newly_downgraded
    if args.fail_if_downgraded_requests is not None and downgraded > args.fail_if_downgraded_requests:
        failures.append(f"{downgraded} requests newly downgraded (more than {args.fail_if_downgraded_requests})")
    increase = report.changes.difference
    if args.fail_if_spend_increase is not None and increase > args.fail_if_spend_increase:
        failures.append(f"spend up {format_usd(increase)} (more than {format_usd(args.fail_if_spend_increase)})")
    return failures


# the document -----------------------------------------------------------------------------------


def dry_run_document(report: DryRunReport, base: str, head: str, changes: list[str], skipped: int,
                     failures: list[str], top: int) -> Document:
    change = report.changes
    period = (f"{report.first:%Y-%m-%d} to {report.last:%Y-%m-%d}" if report.first and report.last
              else "an empty ledger")
    summary = (f"spendgate dry-run: {_plural(len(report.newly_paused_developers), 'developer')} newly paused, "
               f"{_plural(change.newly_downgraded, 'request')} newly downgraded, {change.no_longer_paused:,} no "
               f"longer paused; spend {format_usd(change.base_cost)} -> {format_usd(change.head_cost)} "
               f"({format_usd(change.difference, signed=True)}{_percent(change.difference, change.base_cost)}) "
               f"over {period}")
    facts = [f"{report.replayed:,} of {report.ledger_requests:,} ledger requests replayed (budgeted /v1/messages) "
             f"through {base} (base) and {head} (head)",
             _reproduction(report)]
    if failures:
        facts.insert(0, "FAILED: " + "; ".join(failures))
    if report.head.estimated_requests or report.base.estimated_requests:
        facts.append(f"includes {format_usd(report.head.estimated_cost)} estimated for "
                     f"{report.head.estimated_requests:,} requests the recording refused (priced like the "
                     "session's previous turn)")
    if skipped:
        facts.append(f"{skipped:,} bad ledger lines skipped (--skip-bad-lines)")
    names = short_names(b.id for b in report.budgets)
    sections = [
        Section("Policy changes", lines=changes or ["none"]),
        Section("Decisions", table=_decisions(report)),
        Section("Budgets", table=_budgets(report, names)),
        Section(f"Top developers (of {sum(1 for i in report.developers.values() if i.changed):,} affected)",
                table=_impacts([(name, impact) for name, impact in report.top_developers(top)], "developer")),
        Section("Top sessions", table=_impacts([(f"{dev} {session[:8]}", impact)
                                                for (dev, session), impact in report.top_sessions(top)],
                                               "developer, session")),
        Section("Spend against the limit", charts=_charts(report, names),
                note="bars: head spend per window (daily budgets) or window-to-date per UTC day; lines: head limit, "
                     "base limit, base spend"),
    ]
    return Document(summary=summary, facts=facts, sections=sections, data=_data(report, base, head, changes,
                                                                                  skipped, failures))


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("s" if count != 1 else "")


def _percent(difference: Decimal, base: Decimal) -> str:
    return f", {difference * 100 / base:+.1f}%" if base else ""


def _reproduction(report: DryRunReport) -> str:
    if not report.replayed:
        return "nothing to replay"
    text = f"base reproduces {report.base_matches:,} of {report.replayed:,} recorded decisions"
    if report.mismatches:
        first = report.mismatch_examples[0]
        text += (f" (the ledger was made under another policy, or concurrently; e.g. {first.request_id}: recorded "
                 f"{first.recorded}, replayed {first.replayed})")
    return text


def _decisions(report: DryRunReport) -> Table:
    change, base, head = report.changes, report.base, report.head
    rows = [
        ["served-model cost", format_usd(base.cost), format_usd(head.cost), format_usd(change.difference, True)],
        ["requests downgraded", f"{base.downgraded:,}", f"{head.downgraded:,}",
         f"+{change.newly_downgraded:,} / -{change.no_longer_downgraded:,}"],
        ["requests paused", f"{base.paused:,}", f"{head.paused:,}",
         f"+{change.newly_paused:,} / -{change.no_longer_paused:,}"],
        ["developers paused", f"{len(base.paused_developers):,}", f"{len(head.paused_developers):,}",
         f"{len(report.newly_paused_developers):,} newly"],
    ]
    return Table(["", "base", "head", "change"], rows, numeric=frozenset({1, 2, 3}))


def _budgets(report: DryRunReport, names: dict[str, str]) -> Table:
    rows = []
    for budget in report.budgets:
        rows.append([names[budget.id], _limit(budget), _enforcement(budget),
                     f"{format_usd(budget.base_spent)} -> {format_usd(budget.head_spent)}",
                     _actions(budget.base_actions, budget.base_dry_run), _actions(budget.head_actions,
                                                                                   budget.head_dry_run),
                     _crossing(budget)])
    return Table(["budget", "limit", "enforcement", "spend", "base decided", "head decided",
                  "first crossed (base -> head)"], rows, numeric=frozenset({3}))


def _limit(budget: BudgetReport) -> str:
    before = format_usd(Decimal(budget.base.limitUSD)) if budget.base else "(none)"
    after = format_usd(Decimal(budget.head.limitUSD)) if budget.head else "(removed)"
    return before if before == after else f"{before} -> {after}"


def _enforcement(budget: BudgetReport) -> str:
    before = budget.base.enforcement.value if budget.base else "(none)"
    after = budget.head.enforcement.value if budget.head else "(removed)"
    return before if before == after else f"{before} -> {after}"


def _actions(actions: dict[str, int], dry_run: dict[str, int]) -> str:
    parts = [f"{count:,} {action}" for action, count in sorted(actions.items())]
    parts += [f"{count:,} {action} (dry run)" for action, count in sorted(dry_run.items())]
    return ", ".join(parts) or "-"


def _crossing(budget: BudgetReport) -> str:
    parts = []
    for state in THRESHOLD_STATES:
        before, after = budget.base_crossed.get(state), budget.head_crossed.get(state)
        if before or after:
            parts.append(f"{state.value} {_when(before)} -> {_when(after)}")
    return "; ".join(parts) or "-"


def _when(moment: datetime | None) -> str:
    return f"{moment:%m-%d %H:%M}" if moment else "never"


def _impacts(items: list[tuple[str, Impact]], label: str) -> Table:
    rows = []
    for name, impact in items:
        rows.append([name, f"{impact.newly_downgraded:,}", f"{impact.no_longer_downgraded:,}",
                     f"{impact.newly_paused:,}", f"{impact.no_longer_paused:,}",
                     f"{format_usd(impact.base_cost)} -> {format_usd(impact.head_cost)}"])
    return Table([label, "newly downgraded", "no longer downgraded", "newly paused", "no longer paused", "spend"],
                 rows, numeric=frozenset({1, 2, 3, 4, 5}))


def _charts(report: DryRunReport, names: dict[str, str]) -> list[Chart]:
    if report.first is None or report.last is None:
        return []
    days = days_between(report.first, report.last)
    charts = []
    for budget in [b for b in report.budgets if b.changed and b.windows and b.head][:CHARTS]:
        assert budget.head is not None
        head_limit = Decimal(budget.head.limitUSD)
        base_limit = Decimal(budget.base.limitUSD) if budget.base else head_limit
        if is_daily(budget):
            labels = [w.window[5:] for w in budget.windows]
            head_spend = [w.head_spent for w in budget.windows]
            base_spend = [w.base_spent for w in budget.windows]
        else:
            labels = [day[5:] for day in days]
            head_spend, base_spend = window_to_date(budget, days, 1), window_to_date(budget, days, 0)
        charts.append(Chart(f"{names[budget.id]}: spend against the limit", labels, bars=[head_spend],
                            lines=[[head_limit] * len(labels), [base_limit] * len(labels), base_spend]))
    return charts


def _data(report: DryRunReport, base: str, head: str, changes: list[str], skipped: int,
          failures: list[str]) -> dict[str, object]:
    change = report.changes
    return {
        "base": base, "head": head, "from": report.first, "to": report.last,
        "ledgerRequests": report.ledger_requests, "replayed": report.replayed, "skippedLines": skipped,
        "baseReproduces": report.base_matches, "failures": failures, "policyChanges": changes,
        "summary": {"baseCostUSD": change.base_cost, "headCostUSD": change.head_cost,
                    "differenceUSD": change.difference, "estimatedHeadCostUSD": report.head.estimated_cost,
                    "newlyDowngraded": change.newly_downgraded, "noLongerDowngraded": change.no_longer_downgraded,
                    "newlyPaused": change.newly_paused, "noLongerPaused": change.no_longer_paused,
                    "newlyPausedDevelopers": sorted(report.newly_paused_developers)},
        "budgets": [{"id": b.id, "baseSpentUSD": b.base_spent, "headSpentUSD": b.head_spent,
                     "baseDecided": b.base_actions, "headDecided": b.head_actions,
                     "baseDryRun": b.base_dry_run, "headDryRun": b.head_dry_run,
                     "baseFirstCrossed": {s.value: t for s, t in b.base_crossed.items()},
                     "headFirstCrossed": {s.value: t for s, t in b.head_crossed.items()},
                     "windows": [{"window": w.window, "baseSpentUSD": w.base_spent, "headSpentUSD": w.head_spent,
                                  "basePeak": w.base_peak, "headPeak": w.head_peak} for w in b.windows]}
                    for b in report.budgets],
        "developers": {name: _impact_data(impact) for name, impact in sorted(report.developers.items())
                       if impact.changed or impact.difference},
    }


def _impact_data(impact: Impact) -> dict[str, object]:
    names = ("newly_downgraded", "no_longer_downgraded", "newly_paused", "no_longer_paused")
    data: dict[str, object] = {_camel(name): getattr(impact, name) for name in names}
    data["baseCostUSD"], data["headCostUSD"] = impact.base_cost, impact.head_cost
    return data


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def _money(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount of dollars like 250.00") from None


def register(commands: Commands) -> None:
    dry_run = command(commands, "dry-run", _dry_run,
                      "replay a ledger through the base and head policies and report the impact "
                      "(exit 1: a --fail-if rule tripped; 2: bad input)")
    add_source_arguments(dry_run, options=True)
    dry_run.add_argument("--ledger", nargs="+", required=True, metavar="PATH",
                         help="ledger files or directories (rotated .N and .gz too; - for standard input)")
    dry_run.add_argument("--since", help="only traffic after this: 30d / 12h before the newest record, or a date")
    dry_run.add_argument("--top", type=int, default=10, help="developers and sessions to list (default 10)")
    dry_run.add_argument("--skip-bad-lines", action="store_true",
                         help="leave out bad ledger lines (each printed as a warning, counted in the report) "
                              "instead of failing")
    dry_run.add_argument("--fail-if-paused-developers", type=int, metavar="N",
                         help="exit 1 if more than N developers would be newly paused")
    dry_run.add_argument("--fail-if-downgraded-requests", type=int, metavar="N",
                         help="exit 1 if more than N requests would be newly downgraded")
    dry_run.add_argument("--fail-if-spend-increase", type=_money, metavar="USD",
                         help="exit 1 if the head policy would have cost more than USD extra")
    add_output_flag(dry_run)
