"""Spend the sink journals (SIGKILL-safe) is already in the ledger file when the sink hears of it, so a
killed proxy never holds journaled spend that its ledger, the chargeback record, lacks.
tests/e2e/test_crash.py shows the same with a real SIGKILL."""

from __future__ import annotations

from pathlib import Path

from proxy.proxy_harness import Keys, StartGateway, message_request
from spendgate.proxy.settle import Spend
from spendgate.testing.upstream import MockUpstream


class LedgerOnRecord:
    """A sink that looks into the ledger file at the moment it is told of a spend."""

    def __init__(self) -> None:
        self.ledger: Path | None = None
        self.seen: list[tuple[str, bool]] = []  # (request id, its ledger line was on disk)

    def record(self, spend: Spend) -> None:
        assert self.ledger is not None
        on_disk = self.ledger.exists() and spend.request_id.encode() in self.ledger.read_bytes()
        self.seen.append((spend.request_id, on_disk))


async def test_a_priced_ledger_line_is_written_before_the_sink_journals(
        start_gateway: StartGateway, keys: Keys, upstream: MockUpstream) -> None:
    sink = LedgerOnRecord()
    running = await start_gateway(spend_sink=sink)
    sink.ledger = running.ledger_path
    async with running.client(keys.alice) as client:
        for stream in (False, True, False):
            assert (await client.post("/v1/messages", json=message_request(stream=stream))).status_code == 200
    assert len(sink.seen) == 3
    assert all(on_disk for _, on_disk in sink.seen), sink.seen
