"""The spendgate Grafana dashboard, built with grafana-foundation-sdk (Grafana's own typed builders).

    .venv/bin/python hack/dashboard.py      # writes charts/spendgate/dashboards/spendgate.json (make dashboard)

The chart ships the JSON as a ConfigMap for Grafana's dashboard sidecar (monitoring.grafanaDashboard).
tests/chart/test_dashboard.py fails when the JSON differs from what this builds, or when a query
names a metric or label that the proxy and the operator do not export.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import BigValueColorMode, GraphDrawStyle, LineStyle
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

OUTPUT = Path(__file__).resolve().parents[1] / "charts" / "spendgate" / "dashboards" / "spendgate.json"
UID = "spendgate-overview"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
COST_CENTER = 'cost_center=~"$cost_center"'
HOURLY = 3600  # spend rates are shown in dollars per hour


def query(expr: str, legend: str = "", instant: bool = False, ref_id: str = "A") -> prometheus.Dataquery:
    built = (prometheus.Dataquery().expr(expr).legend_format(legend or "__auto").datasource(DATASOURCE)
             .ref_id(ref_id))
    return built.instant() if instant else built.range()


def series(title: str, description: str, unit: str, *queries: prometheus.Dataquery, width: int = 12,
           height: int = 8) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
             .span(width).height(height).fill_opacity(10).line_width(2))
    for ref_id, built in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(built.ref_id(ref_id))
    return panel


def spend_rows(board: dashboard.Dashboard) -> dashboard.Dashboard:
    rate = f"rate(spendgate_cost_usd_total{{{COST_CENTER}}}[$__rate_interval])"
    return (
        board.with_row(dashboard.Row("Spend"))
        .with_panel(stat.Panel().title("Spend in the selected range").unit("currencyUSD").datasource(DATASOURCE)
                    .description("Priced cost of every answered request (the ledger, not this metric, "
                                 "reconciles with the invoice).").span(6).height(6)
                    .color_mode(BigValueColorMode.NONE)
                    .with_target(query(f"sum(increase(spendgate_cost_usd_total{{{COST_CENTER}}}[$__range]))",
                                       instant=True)))
        .with_panel(stat.Panel().title("Requests paused in the selected range").datasource(DATASOURCE)
                    .description("429 billing_error answers: a budget reached its pause threshold.")
                    .span(6).height(6).color_mode(BigValueColorMode.BACKGROUND)
                    .with_target(query('sum(increase(spendgate_enforcement_decisions_total{decision="pause", '
                                       f'{COST_CENTER}}}[$__range]))', instant=True)))
        .with_panel(stat.Panel().title("Requests downgraded in the selected range").datasource(DATASOURCE)
                    .description("Sent to a cheaper model down the cascade (Downgrade state or a routing rule).")
                    .span(6).height(6).color_mode(BigValueColorMode.BACKGROUND)
                    .with_target(query('sum(increase(spendgate_enforcement_decisions_total{decision="downgrade", '
                                       f'{COST_CENTER}}}[$__range]))', instant=True)))
        .with_panel(stat.Panel().title("Gateways on a stale bundle").datasource(DATASOURCE)
                    .description("Gateways whose policy source changed more than a minute ago without the "
                                 "change being in force (revocations and new limits included).")
                    .span(6).height(6).color_mode(BigValueColorMode.BACKGROUND)
                    .with_target(query("count(spendgate_bundle_stale_seconds > 60) or vector(0)", instant=True)))
        .with_panel(series("Spend by cost center", "Dollars per hour, summed over every gateway.", "currencyUSD",
                           query(f"sum by (cost_center) ({rate}) * {HOURLY}", "{{cost_center}}")))
        .with_panel(series("Spend by developer (top 10)", "Dollars per hour; the top 10% of users usually "
                           "spend about half, so averages hide what matters.", "currencyUSD",
                           query(f"topk(10, sum by (cost_center, developer) ({rate})) * {HOURLY}",
                                 "{{developer}} ({{cost_center}})")))
        .with_panel(series("Spend by model", "Dollars per hour by the model that served (after downgrades).",
                           "currencyUSD", query(f"sum by (model) ({rate}) * {HOURLY}", "{{model}}"), width=24))
    )


def budget_rows(board: dashboard.Dashboard) -> dashboard.Dashboard:
    return (
        board.with_row(dashboard.Row("Budgets"))
        .with_panel(series("Budget burn-down: spent against the limit", "Each budget's spend in its current "
                           "window (the operator's fold of every proxy's report) and its limit (dashed).",
                           "currencyUSD",
                           query(f"spendgate_budget_spent_usd{{{COST_CENTER}}}", "{{namespace}}/{{budget}} spent"),
                           query(f"spendgate_budget_limit_usd{{{COST_CENTER}}}", "{{namespace}}/{{budget}} limit"))
                    .override_by_regexp(".* limit$", [{"id": "custom.lineStyle",
                                                      "value": LineStyle(fill="dash", dash=[10, 10])}]))
        .with_panel(series("Budget burn-down: remaining", "limit - spent in the current window; below zero "
                           "once over (a budget pauses at its pause threshold, 110% by default).", "currencyUSD",
                           query(f"spendgate_budget_limit_usd{{{COST_CENTER}}} - spendgate_budget_spent_usd",
                                 "{{namespace}}/{{budget}}")))
        .with_panel(bargauge.Panel().title("Used, per budget").unit("percentunit").min(0).max(1.1)
                    .description("Spent / limit now; thresholds at 80% (alert), 95% (downgrade), 110% (pause) "
                                 "by default.").datasource(DATASOURCE).span(12).height(8)
                    .with_target(query(f"sort_desc(spendgate_budget_used_ratio{{{COST_CENTER}}})",
                                       "{{namespace}}/{{budget}}", instant=True)))
        .with_panel(table.Panel().title("Budgets not Ok").datasource(DATASOURCE).span(12).height(8)
                    .description("Budgets in Alert, Downgrade or Paused state now.")
                    .with_target(query(f'max by (namespace, budget, cost_center, state) '
                                       f'(spendgate_budget_state{{state!="Ok", {COST_CENTER}}}) == 1',
                                       instant=True).format("table")))
    )


def enforcement_rows(board: dashboard.Dashboard) -> dashboard.Dashboard:
    return (
        board.with_row(dashboard.Row("Enforcement"))
        .with_panel(series("Downgrades and pauses", "Requests per hour that a budget changed.", "short",
                           query("sum by (decision) (increase(spendgate_enforcement_decisions_total"
                                 f"{{{COST_CENTER}}}[1h]))", "{{decision}}"))
                    .draw_style(GraphDrawStyle.BARS))
        .with_panel(series("Threshold alerts", "Alerts the operator sent (once per threshold per window), by "
                           "result.", "short",
                           query("sum by (threshold, result) (increase(spendgate_alerts_total[1h]))",
                                 "{{threshold}} {{result}}"))
                    .draw_style(GraphDrawStyle.BARS))
    )


def gateway_rows(board: dashboard.Dashboard) -> dashboard.Dashboard:
    def quantile(metric: str, q: str) -> prometheus.Dataquery:
        return query(f'histogram_quantile({q}, sum by (le) (rate({metric}_bucket{{endpoint="messages"}}'
                     "[$__rate_interval])))", f"p{q[2:]}")

    return (
        board.with_row(dashboard.Row("Gateways"))
        .with_panel(series("Added latency (Messages)", "The gateway's own share of the time to first byte.", "s",
                           quantile("spendgate_added_latency_seconds", "0.5"),
                           quantile("spendgate_added_latency_seconds", "0.99")))
        .with_panel(series("Upstream latency (Messages)", "Anthropic's time to the response headers.", "s",
                           quantile("spendgate_upstream_latency_seconds", "0.5"),
                           quantile("spendgate_upstream_latency_seconds", "0.99")))
        .with_panel(series("Bundle staleness", "How long each gateway's policy source has differed from the "
                           "bundle in force (0: in sync). The SpendgateGatewayBundleStale alert fires past "
                           "monitoring.prometheusRule.bundleStaleSeconds.", "s",
                           query("max by (pod) (spendgate_bundle_stale_seconds)", "{{pod}}")))
        .with_panel(series("Requests by status", "Answers per second by HTTP status.", "reqps",
                           query(f"sum by (status) (rate(spendgate_requests_total{{{COST_CENTER}}}"
                                 "[$__rate_interval]))", "{{status}}")))
    )


def build() -> dict[str, Any]:
    board = (
        dashboard.Dashboard("spendgate: spend and budgets").uid(UID).tags(["spendgate", "anthropic", "finops"])
        .description("Spend by cost center and developer, budget burn-down, enforcement and gateway health "
                     "(generated by hack/dashboard.py).")
        .refresh("1m").time("now-24h", "now").timezone("browser").editable()
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(dashboard.QueryVariable("cost_center").label("Cost center").datasource(DATASOURCE)
                       .query("label_values(spendgate_cost_usd_total, cost_center)").multi(True)
                       .include_all(True).all_value(".*").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED))
    )
    for rows in (spend_rows, budget_rows, enforcement_rows, gateway_rows):
        board = rows(board)
    document: dict[str, Any] = json.loads(json.dumps(board.build(), cls=JSONEncoder))
    return document


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT.relative_to(Path.cwd()) if OUTPUT.is_relative_to(Path.cwd()) else OUTPUT}",
          file=sys.stderr)
