"""Settlement can never crash, and money is never silently zero (issue 9, section 2).

Each settlement step is made to raise in turn: the client's answer is complete, the request has
exactly one ledger line (flagged with the step), its reservation is released, the failure is
counted, and the next request is served normally. Usage the upstream sends wrong (missing,
negative, a string, absurdly large, compressed, too large to keep whole) is flagged and never a
silent "0".
"""

from __future__ import annotations

import gzip
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from proxy.proxy_harness import Keys, Running, StartGateway, message_request
from spendgate.adapters.journal import SpendJournal, read_journal
from spendgate.logic.pricing import MAX_PLAUSIBLE_TOKENS, PriceBook
from spendgate.logic.tracker import SpendTracker
from spendgate.proxy.enforce import BudgetAdmission
from spendgate.proxy.ledger import LedgerWriter
from spendgate.proxy.metrics import ProxyMetrics
from spendgate.testing.upstream import TEXT, MockUpstream, Reply, Scenario, message_json

BUDGET = """
apiVersion: spendgate.io/v1alpha1
kind: Budget
metadata: {name: alice-settle, namespace: ai-budgets}
spec:
  costCenter: platform
  scope: {kind: Developer, name: alice}
  limitUSD: "100.00"
  window: {period: Daily, timeZone: UTC}
"""


class Enforcing:
    """A gateway with the real budget admission and journal, and what it holds in flight."""

    def __init__(self, running: Running, tracker: SpendTracker, journal: Path) -> None:
        self.running, self.tracker, self.journal = running, tracker, journal

    def in_flight(self) -> Decimal:
        """Held against any budget window the request was charged to (all of them are in the totals)."""
        charges = self.tracker.local_totals()
        assert charges
        return sum((self.tracker.in_flight(*charge) for charge in charges), Decimal(0))

    async def send(self, key: str, stream: bool, **headers: str) -> Any:
        async with self.running.client(key, **headers) as client:
            return await client.post("/v1/messages", json=message_request(stream=stream))


@pytest.fixture
async def enforcing(start_gateway: StartGateway, policies: Path, tmp_path: Path) -> Enforcing:
    (policies / "40-settle.yaml").write_text(BUDGET)
    journal = tmp_path / "spend.journal"
    tracker = SpendTracker(SpendJournal(journal))
    budgets = BudgetAdmission(tracker)
    running = await start_gateway(admission=budgets, spend_sink=budgets)
    return Enforcing(running, tracker, journal)


def spent_on(tracker: SpendTracker, budget: str) -> Decimal:
    (spent,) = [total.spent for (budget_id, _), total in tracker.local_totals().items() if budget_id == budget]
    return spent


def _raise(error: Exception) -> Callable[..., Any]:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise error
    return broken


# step name in the metric, the flag on the ledger line, and how to break it
STEPS: dict[str, tuple[str, str | None, Callable[[pytest.MonkeyPatch], None]]] = {
    "pricing": ("pricing", "pricing_failed",
                lambda mp: mp.setattr(PriceBook, "charge", _raise(ArithmeticError("a pricing bug")))),
    "metrics": ("metrics", "metrics_failed",
                lambda mp: mp.setattr(ProxyMetrics, "request", _raise(KeyError("a metrics bug")))),
    "ledger line": ("ledger line", "internal_error",
                    lambda mp: mp.setattr("spendgate.proxy.settle.record", _raise(TypeError("a ledger bug")))),
    "journal": ("journal", None,
                lambda mp: mp.setattr(SpendJournal, "append", _raise(OSError(28, "No space left on device")))),
}


@pytest.mark.parametrize("stream", [False, True], ids=["message", "stream"])
@pytest.mark.parametrize("step", sorted(STEPS))
async def test_a_failing_settlement_step(step: str, stream: bool, enforcing: Enforcing, keys: Keys,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    metric_step, flag, breaking = STEPS[step]
    breaking(monkeypatch)
    response = await enforcing.send(keys.alice, stream)
    assert response.status_code == 200
    if stream:
        assert response.text.rstrip().endswith('data: {"type":"message_stop"}')
    else:
        assert response.json()["content"][0]["text"] == TEXT.content[0]["text"]
    (line,) = enforcing.running.ledger()
    if flag is not None:
        assert flag in line["flags"]
    assert enforcing.in_flight() == 0  # the reservation was released
    assert f'spendgate_settle_errors_total{{step="{metric_step}"}} 1.0' in await enforcing.running.metrics()
    monkeypatch.undo()
    assert (await enforcing.send(keys.alice, stream)).status_code == 200
    assert len(enforcing.running.ledger()) == 2


async def test_a_journal_that_fails_is_healed_from_the_ledger_on_restart(
        enforcing: Enforcing, keys: Keys, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The settle line could not be written: in memory the spend counts; after a restart the start line
    finds the ledger line and the journal gets the real cost, not an estimate."""
    from spendgate.proxy.recovery import settle_interrupted

    real_append = SpendJournal.append
    monkeypatch.setattr(SpendJournal, "append", _raise(OSError(5, "Input/output error")))
    assert (await enforcing.send(keys.alice, stream=False)).status_code == 200
    monkeypatch.setattr(SpendJournal, "append", real_append)
    (line,) = enforcing.running.ledger()
    assert read_journal(enforcing.journal).unfinished()  # started, never settled in the journal

    journal = SpendJournal(enforcing.journal)
    tracker = SpendTracker(journal)
    ledger = LedgerWriter(str(enforcing.running.ledger_path), 2**30, 1)
    assert settle_interrupted(journal, tracker, ledger) == 1
    ledger.close()
    assert len(enforcing.running.ledger()) == 1  # no second line: the real one was found
    assert spent_on(tracker, "ai-budgets/alice-settle") == Decimal(line["costUSD"])
    assert read_journal(enforcing.journal).unfinished() == []


def scenario(usage: dict[str, Any]) -> Reply:
    return Reply(Scenario(content=({"type": "text", "text": "ok"},), usage=usage,
                          start_usage={**usage, "output_tokens": 1}))


USAGE_FAULTS: dict[str, tuple[Reply, set[str], Callable[[dict[str, Any]], bool]]] = {
    "a negative count": (scenario({"input_tokens": -5, "output_tokens": 10}), {"usage_invalid"},
                         lambda line: line["tokens"]["input"] == 0 and line["tokens"]["output"] == 10),
    "a string count": (scenario({"input_tokens": "12", "output_tokens": 10}), {"usage_invalid"},
                       lambda line: line["tokens"]["input"] == 0),
    "a float count": (scenario({"input_tokens": 12.5, "output_tokens": 10}), {"usage_invalid"},
                      lambda line: line["tokens"]["input"] == 0),
    "an absurd count": (scenario({"input_tokens": 10**15, "output_tokens": 10}), {"usage_implausible"},
                        lambda line: line["tokens"]["input"] == MAX_PLAUSIBLE_TOKENS
                        and Decimal(line["costUSD"]) < 100),
}


@pytest.mark.parametrize("stream", [False, True], ids=["message", "stream"])
@pytest.mark.parametrize("fault", sorted(USAGE_FAULTS))
async def test_bad_usage_is_flagged_never_silently_zero(fault: str, stream: bool, enforcing: Enforcing, keys: Keys,
                                                        upstream: MockUpstream) -> None:
    reply, flags, check = USAGE_FAULTS[fault]
    upstream.enqueue(reply)
    assert (await enforcing.send(keys.alice, stream)).status_code == 200
    (line,) = enforcing.running.ledger()
    assert flags <= set(line["flags"]) and check(line)
    for flag in flags:
        assert f'spendgate_request_flags_total{{flag="{flag}"}} 1.0' in await enforcing.running.metrics()


def raw(body: bytes, *headers: tuple[str, str]) -> Reply:
    return Reply(status=200, body=body, headers=headers)


MESSAGE = message_json(TEXT, "claude-opus-5-5", "msg_raw")
NO_USAGE = orjson.dumps({**orjson.loads(MESSAGE), "usage": None})


async def test_missing_usage_is_billed_at_the_estimate(enforcing: Enforcing, keys: Keys,
                                                       upstream: MockUpstream) -> None:
    upstream.enqueue(raw(NO_USAGE))
    assert (await enforcing.send(keys.alice, stream=False)).status_code == 200
    (line,) = enforcing.running.ledger()
    assert {"usage_missing", "estimated"} <= set(line["flags"])
    assert Decimal(line["costUSD"]) > 0
    assert line["tokens"]["input"] > 0 and line["tokens"]["output"] == 1000  # admission's estimate
    assert spent_on(enforcing.tracker, "ai-budgets/alice-settle") == Decimal(line["costUSD"])


async def test_a_compressed_answer_is_read_and_relayed_untouched(enforcing: Enforcing, keys: Keys,
                                                                 upstream: MockUpstream) -> None:
    packed = gzip.compress(MESSAGE)
    upstream.enqueue(raw(packed, ("content-encoding", "gzip")))
    async with enforcing.running.client(keys.alice) as client:
        response = await client.post("/v1/messages", json=message_request())
        assert response.headers["content-encoding"] == "gzip"
        assert orjson.loads(response.content) == orjson.loads(MESSAGE)  # httpx inflated the very bytes sent
    (line,) = enforcing.running.ledger()
    assert line["flags"] == [] and line["tokens"]["cacheRead"] == 2000


async def test_an_unreadable_encoding_is_billed_at_the_estimate(enforcing: Enforcing, keys: Keys,
                                                                upstream: MockUpstream) -> None:
    upstream.enqueue(raw(b"\x1b\x2a\x00 brotli bytes", ("content-encoding", "br")))
    async with enforcing.running.client(keys.alice) as client:
        response = await client.send(client.build_request("POST", "/v1/messages", json=message_request()),
                                     stream=True)
        assert await response.aread() == b"\x1b\x2a\x00 brotli bytes"
    (line,) = enforcing.running.ledger()
    assert {"usage_unreadable", "usage_missing", "estimated"} <= set(line["flags"])
    assert Decimal(line["costUSD"]) > 0


async def test_a_huge_answer_streams_through_and_is_priced_from_its_tail(
        start_gateway: StartGateway, policies: Path, keys: Keys, upstream: MockUpstream, tmp_path: Path) -> None:
    (policies / "40-settle.yaml").write_text(BUDGET)
    budgets = BudgetAdmission(SpendTracker(SpendJournal(tmp_path / "j")))
    running = await start_gateway(admission=budgets, spend_sink=budgets, max_buffered_response_bytes=64 * 1024)
    big = Scenario(content=({"type": "text", "text": "x" * 1_000_000},), usage=TEXT.usage)
    upstream.enqueue(Reply(big))
    async with running.client(keys.alice) as client:
        response = await client.post("/v1/messages", json=message_request())
    assert response.status_code == 200 and len(response.json()["content"][0]["text"]) == 1_000_000
    (line,) = running.ledger()
    assert line["flags"] == [] and line["tokens"]["cacheRead"] == 2000 and line["servedModel"] == "claude-opus-5-5"
