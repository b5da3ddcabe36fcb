"""`spendgate chargeback` and `spendgate reconcile`: the month for finance, and the check against Anthropic.

Both read a ledger from files or directories (JSON lines and compacted days, through DuckDB) or from
PostgreSQL (a DSN), for UTC calendar months. Exit status: 0 done (reconcile: everything matched);
1 reconcile found mismatches; 2 bad input (the message names it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from spendgate.adapters.adminapi import (
    ANTHROPIC_API,
    COST_REPORT,
    USAGE_REPORT,
    AdminApiError,
    fetch_reports,
    key_from_file,
    key_from_secret,
)
from spendgate.adapters.ledgerduck import LedgerFiles
from spendgate.adapters.ledgerpostgres import PostgresLedger
from spendgate.adapters.policyfiles import compile_directory
from spendgate.cli.common import Commands, UsageError, command
from spendgate.cli.ledgerstore import readable_errors
from spendgate.cli.output import FORMATS, Document, Section, Table, csv_text, render
from spendgate.logic.adminreports import read_cost_report, read_usage_report
from spendgate.logic.chargeback import Chargeback as ChargebackTable
from spendgate.logic.chargeback import ChargebackRow as Row
from spendgate.logic.chargeback import (
    GroupBy,
    RowKind,
    budget_figures,
    build,
    monthly_budgets,
    window_of,
)
from spendgate.logic.focus import COLUMNS, FOCUS_VERSION, Account, focus_rows
from spendgate.logic.pricing import PriceBook, Tokens
from spendgate.logic.reconcile import Reconciliation, Side, parse_tolerance, reconcile
from spendgate.logic.spend import exact, format_usd
from spendgate.logic.usage import Dimension, Month, UsageSource
from spendgate.logic.windows import rfc3339
from spendgate.policy.bundle import Bundle, PricingEntry

DSN_PREFIXES = ("postgresql://", "postgres://")
CHARGEBACK_FORMATS = (*FORMATS, "csv", "focus")
ITEM_DIMENSIONS = {GroupBy.DEVELOPER: Dimension.DEVELOPER, GroupBy.REPOSITORY: Dimension.REPOSITORY,
                   GroupBy.MODEL: Dimension.MODEL, GroupBy.SESSION: Dimension.SESSION}
BUDGET_DIMENSIONS = {GroupBy.DEVELOPER: Dimension.DEVELOPER, GroupBy.REPOSITORY: Dimension.REPOSITORY}
FOCUS_DIMENSIONS = [Dimension.DAY, Dimension.COST_CENTER, Dimension.DEVELOPER, Dimension.REPOSITORY,
                    Dimension.SESSION, Dimension.PRICED_MODEL]


# the ledger, the policies, the output ---------------------------------------------------------------


def open_ledger(paths: Sequence[str], skip_bad_lines: bool, start: datetime, end: datetime) -> UsageSource:
    """Ledger files (loaded for [start, end)) or one PostgreSQL DSN."""
    dsns = [path for path in paths if path.startswith(DSN_PREFIXES)]
    if dsns:
        if len(paths) > 1:
            raise UsageError("--ledger: a PostgreSQL DSN is the whole ledger; give it alone")
        return PostgresLedger(dsns[0])
    store = LedgerFiles(paths, skip_bad_lines=skip_bad_lines)
    store.load(start, end)
    for problem in store.skipped:
        print(f"warning: skipped {problem}", file=sys.stderr)
    return store


def skipped_count(source: UsageSource) -> int:
    return len(source.skipped) if isinstance(source, LedgerFiles) else 0


def load_policies(directory: Path | None) -> Bundle:
    if directory is None:
        return Bundle()
    result = compile_directory(directory)
    if result.errors:
        raise UsageError(f"--policies {directory} does not compile: " + "; ".join(map(str, result.errors)))
    return result.bundle.bundle


def emit(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8", newline="")
    print(f"# written to {out}", file=sys.stderr)


def _month(text: str) -> Month:
    try:
        return Month.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _money(amount: Decimal) -> str:
    return exact(amount) if amount != amount.to_integral() else format(amount.quantize(Decimal("0.01")), "f")


def _count(value: int) -> str:
    return f"{value:,}"


def _compact(value: int) -> str:
    """Token counts for people: 987, 12.3K, 4.56M, 1.09B (exact counts are in --output json and csv)."""
    for size, unit in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return str(value)


# chargeback --------------------------------------------------------------------------------------------


def _chargeback(args: argparse.Namespace) -> int:
    month: Month = args.period
    with readable_errors():
        bundle = load_policies(args.policies)
        budgets = monthly_budgets(args.by, bundle.budgets)
        windows = [window_of(budget, month) for budget in budgets]
        start = min([month.previous().start, *(window.start for window in windows)])
        end = max([month.end, *(window.end for window in windows)])
        source = open_ledger(args.ledger, args.skip_bad_lines, start, end)
        if args.output == "focus":
            rows = focus_rows(month, source.usage(month.start, month.end, FOCUS_DIMENSIONS), bundle.costCenters,
                              PriceBook(bundle.pricing), Account(args.billing_account_id, args.billing_account_name))
            emit(csv_text(Table(COLUMNS, rows)), args.out)
            print(f"# FOCUS {FOCUS_VERSION}: {len(rows)} rows for {month} (UTC days), {source.describe()}",
                  file=sys.stderr)
            return 0
        by = [Dimension.COST_CENTER, *([ITEM_DIMENSIONS[args.by]] if args.by in ITEM_DIMENSIONS else [])]
        budget_by = [Dimension.COST_CENTER, *([BUDGET_DIMENSIONS[args.by]] if args.by in BUDGET_DIMENSIONS else [])]
        window_usage = {budget.window.timeZone: source.usage(window.start, window.end, budget_by)
                        for budget, window in zip(budgets, windows, strict=True)}
        table = build(month, args.by, source.usage(month.start, month.end, by),
                      source.usage(month.previous().start, month.previous().end, by), bundle.costCenters,
                      budget_figures(month, args.by, bundle.budgets, bundle.costCenters, window_usage))
    if args.output == "csv":
        emit(csv_text(chargeback_csv(table), byte_order_mark=True), args.out)
    else:
        emit(render(chargeback_document(table, source.describe(), skipped_count(source)), args.output), args.out)
    return 0


def _item_label(group_by: GroupBy) -> str:
    return {GroupBy.DEVELOPER: "developer", GroupBy.REPOSITORY: "repository", GroupBy.MODEL: "model",
            GroupBy.SESSION: "session"}.get(group_by, "")


def chargeback_csv(table: ChargebackTable) -> Table:
    """One row per table row, every figure a plain decimal, each labelled with its basis."""
    item = _item_label(table.group_by)
    basis = f"UTC month {rfc3339(table.period.start)} to {rfc3339(table.period.end)}"
    columns = ["period", "basis", "row_type", "cost_center_code", "cost_center", "cost_center_name",
               "cost_center_path", *([item] if item else []), "requests", "input_tokens", "cache_write_5m_tokens",
               "cache_write_1h_tokens", "cache_read_tokens", "output_tokens", "web_searches", "cost_usd",
               "cost_usd_exact", "previous_period", "previous_cost_usd", "variance_usd", "variance_percent",
               "budget", "budget_limit_usd", "budget_spent_usd", "budget_used_percent", "budget_window", "note"]
    rows = []
    for row in table.rows:
        tokens = row.totals.tokens
        budget = row.budget
        rows.append([
            str(table.period), basis, row.kind.value, row.code, row.cost_center, row.name, row.path,
            *([row.item or ""] if item else []), str(row.totals.requests), str(tokens.input),
            str(tokens.cache_write_5m), str(tokens.cache_write_1h), str(tokens.cache_read), str(tokens.output),
            str(tokens.web_searches), format(row.cost, "f"), exact(row.totals.cost), str(table.period.previous()),
            format(row.previous, "f"), format(row.variance, "f"),
            format(row.variance_percent.quantize(Decimal("0.1")), "f") if row.variance_percent is not None else "",
            " ".join(budget.budgets) if budget else "", exact(budget.limit) if budget else "",
            _money(budget.spent) if budget else "", format(budget.used.quantize(Decimal("0.1")), "f") if budget else "",
            budget.basis if budget else "", row.note,
        ])
    return Table(columns, rows)


def _row_label(row: Row) -> str:
    indent = "  " * row.depth
    if row.kind is RowKind.TOTAL:
        return "Total"
    if row.kind is RowKind.SUBTOTAL:
        return f"{indent}{row.name} (subtotal)"
    if row.kind is RowKind.ITEM:
        return f"{indent}  {row.item}"
    return f"{indent}{row.name}"


def chargeback_document(table: ChargebackTable, source: str, skipped: int) -> Document:
    total = table.total
    month = table.period
    item = _item_label(table.group_by)
    columns = ["Code", "Cost center" + (f" / {item}" if item else ""), "Requests", "Input", "Cache", "Output",
               f"Cost UTC {month}", f"UTC {month.previous()}", "Variance", "Budget", "Spent (its window)", "Used"]
    rows = [[row.code if row.kind is not RowKind.ITEM else "", _row_label(row), _count(row.totals.requests),
             _compact(row.totals.tokens.input),
             _compact(row.totals.tokens.cache_write_5m + row.totals.tokens.cache_write_1h
                      + row.totals.tokens.cache_read),
             _compact(row.totals.tokens.output), format_usd(row.cost), format_usd(row.previous),
             _signed(row.variance, row.variance_percent), format_usd(row.budget.limit) if row.budget else "",
             format_usd(row.budget.spent) if row.budget else "", f"{row.budget.used:.1f}%" if row.budget else ""]
            for row in table.rows]
    windows = sorted({row.budget.basis for row in table.rows if row.budget})
    facts = [
        f"Costs, tokens and requests: the UTC calendar month, {rfc3339(month.start)} to {rfc3339(month.end)} "
        "(end exclusive), the basis of Anthropic's invoice and of the FOCUS export",
        f"Variance: against {month.previous()} on the same basis",
        "Budgets: limits and spend in each budget's own window (as Budget.status shows them): "
        + ("; ".join(windows) if windows else "no monthly budgets shown"),
        "Rounded to the cent from the top, so every subtotal and the total add up; exact sums in --output json/csv",
        f"Read from {source}" + (f"; {skipped} bad lines skipped" if skipped else ""),
        *table.notes,
    ]
    data = {
        "period": str(month), "groupBy": table.group_by.value,
        "basis": {"costs": "UTC month", "start": rfc3339(month.start), "end": rfc3339(month.end),
                  "previous": str(month.previous()), "budgets": "each budget's own window"},
        "source": source, "skippedLines": skipped, "notes": table.notes,
        "rows": [_row_data(row, item) for row in table.rows],
    }
    summary = (f"Chargeback {month} (UTC month): {format_usd(total.cost)} over {_count(total.totals.requests)} "
               f"requests, {_signed(total.variance, total.variance_percent)} against {month.previous()}")
    table_title = "By cost center" + (f" and {item}" if item else "")
    return Document(summary=summary, facts=facts, data=data,
                    sections=[Section(table_title, Table(columns, rows, numeric=frozenset(range(2, 12))))])


def _signed(amount: Decimal, percent: Decimal | None) -> str:
    sign = "+" if amount > 0 else "-" if amount < 0 else ""
    text = f"{sign}{format_usd(abs(amount))}"
    return f"{text} ({'+' if percent and percent > 0 else ''}{percent:.1f}%)" if percent is not None else text


def _tokens_data(tokens: Tokens) -> dict[str, int]:
    return {"input": tokens.input, "cacheWrite5m": tokens.cache_write_5m, "cacheWrite1h": tokens.cache_write_1h,
            "cacheRead": tokens.cache_read, "output": tokens.output, "webSearches": tokens.web_searches}


def _row_data(row: Row, item: str) -> dict[str, Any]:
    budget = row.budget
    return {
        "kind": row.kind.value, "code": row.code, "costCenter": row.cost_center, "name": row.name, "path": row.path,
        **({item: row.item} if item and row.kind is RowKind.ITEM else {}),
        "requests": row.totals.requests, "tokens": _tokens_data(row.totals.tokens),
        "costUSD": format(row.cost, "f"), "costUSDExact": exact(row.totals.cost),
        "previousCostUSD": format(row.previous, "f"), "previousCostUSDExact": exact(row.previous_exact),
        "varianceUSD": format(row.variance, "f"),
        "budget": {"budgets": list(budget.budgets), "limitUSD": exact(budget.limit), "spentUSD": exact(budget.spent),
                   "window": budget.basis} if budget else None,
        "note": row.note,
    }


# reconcile ---------------------------------------------------------------------------------------------


def _reconcile(args: argparse.Namespace) -> int:
    month: Month = args.period
    with readable_errors():
        cost_text, usage_text, cost_name, usage_name = _reports(args, month)
        costs, cost_coverage = read_cost_report(cost_text, cost_name)
        usage, usage_coverage = read_usage_report(usage_text, usage_name)
        source = open_ledger(args.ledger, args.skip_bad_lines, month.start, month.end)
        book = PriceBook(PricingEntry())
        result = reconcile(month, source.usage(month.start, month.end, [Dimension.DAY, Dimension.MODEL]), costs,
                           cost_coverage, usage, usage_coverage, lambda model, day: _model_key(book, model, day),
                           args.gateway_key, args.tolerance)
    if args.output == "csv":
        emit(csv_text(reconcile_csv(result)), args.out)
    else:
        emit(render(reconcile_document(result, source.describe(), skipped_count(source)), args.output), args.out)
    return 1 if result.mismatches or not result.total_matches else 0


def _model_key(book: PriceBook, model: str, day: date) -> str:
    """The price table's id for a model id (dated and undated ids meet); an unknown id stays as it is."""
    return book.rates(model, day).model if model else "(no model)"


def _reports(args: argparse.Namespace, month: Month) -> tuple[str, str, str, str]:
    if args.cost_report and args.usage_report:
        return (_read(args.cost_report), _read(args.usage_report), str(args.cost_report), str(args.usage_report))
    if args.cost_report or args.usage_report:
        raise UsageError("give both --cost-report and --usage-report, or neither and an admin key to fetch them")
    if not (args.admin_key_file or args.admin_key_secret):
        raise UsageError("no reports: give --cost-report and --usage-report (saved Admin API responses), or "
                         "--admin-key-file / --admin-key-secret to fetch them")
    try:
        key = key_from_file(args.admin_key_file) if args.admin_key_file else key_from_secret(args.admin_key_secret)
        cost, usage = fetch_reports(key, month, args.admin_api_url)
    except AdminApiError as error:
        raise UsageError(str(error)) from None
    if args.save_reports:
        args.save_reports.mkdir(parents=True, exist_ok=True)
        (args.save_reports / f"cost-report-{month}.json").write_text(cost + "\n", encoding="utf-8")
        (args.save_reports / f"usage-report-{month}.json").write_text(usage + "\n", encoding="utf-8")
    return cost, usage, args.admin_api_url + COST_REPORT, args.admin_api_url + USAGE_REPORT


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"{path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text (a saved Admin API response is JSON)") from None


def _tokens(tokens: Tokens) -> str:
    return _count(sum((tokens.input, tokens.cache_write_5m, tokens.cache_write_1h, tokens.cache_read,
                       tokens.output)))


def reconcile_document(result: Reconciliation, source: str, skipped: int) -> Document:
    month, tolerance = result.period, result.tolerance
    share = result.outside_share
    difference = result.ledger_dollars - result.gateway_dollars
    judged, mismatches = result.judged, result.mismatches
    verdict = ("matches Anthropic's reports" if not mismatches and result.total_matches
               else f"{len(mismatches)} of {len(judged)} day x model lines do not match")
    summary = (f"Reconciliation {month} (UTC days): {verdict}; ledger {format_usd(result.ledger_dollars)}, "
               f"Anthropic for the gateway's keys {format_usd(result.gateway_dollars)}")
    facts = [
        f"Basis: UTC days, as Anthropic buckets its reports; tokens must match exactly, dollars within "
        f"{_percent(tolerance)}",
        f"Month total: ledger {_money(result.ledger_dollars)} vs Anthropic {_money(result.gateway_dollars)} "
        f"({'+' if difference >= 0 else '-'}${_money(abs(difference))}; "
        f"{'within' if result.total_matches else 'outside'} the tolerance)",
        f"Gateway keys: {', '.join(result.gateway_keys)}",
        f"Outside the gateway (other API keys): {format_usd(result.outside_dollars)}"
        + (f", {_percent(share)} of the organisation's {format_usd(result.organisation_dollars)}"
           if share is not None else ""),
        *([f"Not compared (the reports do not cover these whole days): "
           f"{', '.join(str(day) for day in result.uncovered_days)}"] if result.uncovered_days else []),
        f"Read from {source}" + (f"; {skipped} bad lines skipped" if skipped else ""),
        *result.notes,
    ]
    lines = [f"{c.day} {c.model}: {'; '.join(c.causes)}" for c in mismatches]
    daily = Table(["Day (UTC)", "Model", "Ledger tokens", "Anthropic tokens", "Ledger $", "Anthropic $", "Difference",
                   "Status"],
                  [[str(c.day), c.model, _tokens(c.ledger.tokens), _tokens(c.anthropic.tokens),
                    _money(c.ledger.dollars), _money(c.anthropic.dollars), _money(c.difference), c.status.value]
                   for c in result.comparisons],
                  numeric=frozenset(range(2, 7)))
    outside = Table(["Day (UTC)", "Tokens", "Dollars"],
                    [[str(day), _tokens(side.tokens), _money(side.dollars)]
                     for day, side in result.outside_by_day.items()],
                    numeric=frozenset({1, 2}))
    sections = [Section("Mismatches and their likely causes", lines=lines or ["none"]),
                Section("Per UTC day and model (the gateway's keys)", daily),
                Section(f"Outside the gateway: {', '.join(result.outside_keys) or 'no other keys'}", outside)]
    if result.other_tiers:
        sections.append(Section("Other service tiers on the gateway's keys (not priced by the gateway)", lines=[
            f"{tier}: {_tokens(side.tokens)} tokens, {format_usd(side.dollars)}" for tier, side in
            sorted(result.other_tiers.items())]))
    if result.unapportioned:
        sections.append(Section("Costs not tied to an API key and model", lines=[
            f"{item.day} {item.what}: {format_usd(item.dollars)} ({item.reason})" for item in result.unapportioned]))
    return Document(summary=summary, facts=facts, sections=sections, data=_reconcile_data(result, source, skipped))


def _percent(fraction: Decimal) -> str:
    """0.0005 -> "0.05%"; a share like 0.123456 -> "12.346%"."""
    percent = (fraction * 100).quantize(Decimal("0.001"))
    return f"{percent.normalize():f}%"


def _side(side: Side) -> dict[str, Any]:
    return {"tokens": _tokens_data(side.tokens), "dollars": exact(side.dollars)}


def _reconcile_data(result: Reconciliation, source: str, skipped: int) -> dict[str, Any]:
    return {
        "period": str(result.period), "basis": "UTC days", "tolerance": exact(result.tolerance),
        "gatewayKeys": list(result.gateway_keys), "source": source, "skippedLines": skipped,
        "matched": not result.mismatches and result.total_matches,
        "ledgerDollars": exact(result.ledger_dollars), "anthropicGatewayDollars": exact(result.gateway_dollars),
        "outsideDollars": exact(result.outside_dollars), "organisationDollars": exact(result.organisation_dollars),
        "outsideShare": exact(result.outside_share) if result.outside_share is not None else None,
        "uncoveredDays": [str(day) for day in result.uncovered_days],
        "lines": [{"day": str(c.day), "model": c.model, "status": c.status.value, "ledger": _side(c.ledger),
                   "anthropic": _side(c.anthropic), "differenceDollars": exact(c.difference),
                   "tokensMatch": c.tokens_match, "dollarsMatch": c.dollars_match, "causes": list(c.causes)}
                  for c in result.comparisons],
        "outside": {"keys": list(result.outside_keys),
                    "days": {str(day): _side(side) for day, side in result.outside_by_day.items()}},
        "otherTiers": {tier: _side(side) for tier, side in result.other_tiers.items()},
        "unapportioned": [{"day": str(item.day), "what": item.what, "dollars": exact(item.dollars),
                           "reason": item.reason} for item in result.unapportioned],
        "notes": list(result.notes),
    }


def reconcile_csv(result: Reconciliation) -> Table:
    names = ("input", "cache_write_5m", "cache_write_1h", "cache_read", "output", "web_searches")
    columns = ["day_utc", "model", "status", *(f"ledger_{n}" for n in names), "ledger_usd",
               *(f"anthropic_{n}" for n in names), "anthropic_usd", "difference_usd", "causes"]
    rows = [[str(c.day), c.model, c.status.value, *(str(getattr(c.ledger.tokens, n)) for n in names),
             exact(c.ledger.dollars), *(str(getattr(c.anthropic.tokens, n)) for n in names),
             exact(c.anthropic.dollars), exact(c.difference), " | ".join(c.causes)] for c in result.comparisons]
    rows += [[str(day), "(other API keys)", "outside the gateway", *([""] * 7),
              *(str(getattr(side.tokens, n)) for n in names), exact(side.dollars), "", ""]
             for day, side in result.outside_by_day.items()]
    return Table(columns, rows)


# the commands ------------------------------------------------------------------------------------------


def _common(sub: argparse.ArgumentParser, formats: Sequence[str]) -> None:
    sub.add_argument("--period", type=_month, required=True, help="the UTC calendar month, e.g. 2026-11")
    sub.add_argument("--ledger", nargs="+", required=True, metavar="PATH",
                     help="ledger files or directories (JSON lines, compacted days), or one PostgreSQL DSN")
    sub.add_argument("--output", "-o", choices=formats, default="table", help="default: table")
    sub.add_argument("--out", type=Path, help="write here instead of standard output")
    sub.add_argument("--skip-bad-lines", action="store_true",
                     help="leave out ledger lines that are not valid records (each is listed) instead of failing")


def register(commands: Commands) -> None:
    chargeback = command(commands, "chargeback", _chargeback,
                         "the month by cost-center code: requests, tokens, cost, budget, variance (or a FOCUS file)")
    _common(chargeback, CHARGEBACK_FORMATS)
    chargeback.add_argument("--by", type=GroupBy, choices=list(GroupBy), default=GroupBy.COST_CENTER,
                            help="rows per cost center (default), or per developer, repository, model or session "
                                 "within each cost center")
    chargeback.add_argument("--policies", type=Path,
                            help="policy directory: cost-center codes, names, hierarchy and monthly budgets")
    chargeback.add_argument("--billing-account-id", default="anthropic-organization",
                            help="FOCUS BillingAccountId: your Anthropic organization's id")
    chargeback.add_argument("--billing-account-name", help="FOCUS BillingAccountName")

    reconciling = command(commands, "reconcile", _reconcile,
                          "compare the ledger with Anthropic's cost and usage reports, per UTC day and model")
    _common(reconciling, (*FORMATS, "csv"))
    reconciling.add_argument("--cost-report", type=Path, help="saved /v1/organizations/cost_report response(s)")
    reconciling.add_argument("--usage-report", type=Path,
                             help="saved /v1/organizations/usage_report/messages response(s)")
    reconciling.add_argument("--tolerance", type=_tolerance, default=parse_tolerance("0.05%"),
                             help="how far dollars may differ, e.g. 0.05%% (default) or 0.001")
    reconciling.add_argument("--gateway-key", action="append", default=[], metavar="API_KEY_ID",
                             help="an Anthropic API key id the gateway uses (repeat for several; default: the only "
                                  "key in the usage report)")
    reconciling.add_argument("--admin-key-file", type=Path, help="fetch the reports with the admin key in this file")
    reconciling.add_argument("--admin-key-secret", metavar="NAMESPACE/NAME[:KEY]",
                             help="fetch the reports with the admin key in this Secret (key api-key by default)")
    reconciling.add_argument("--admin-api-url", default=ANTHROPIC_API, help=argparse.SUPPRESS)
    reconciling.add_argument("--save-reports", type=Path, metavar="DIR", help="keep the fetched reports here")


def _tolerance(text: str) -> Decimal:
    try:
        return parse_tolerance(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None

