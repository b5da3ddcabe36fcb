"""SIGKILL a proxy in the middle of traffic and start it again: no spend it answered for is lost,
none is counted twice, requests in flight at the kill are settled at their estimate on restart, and
Budget.status ends equal to what the ledgers billed, to the cent."""

from __future__ import annotations

import threading
import time
from collections import Counter
from decimal import Decimal

import httpx
import pytest

from cluster.polling import eventually
from e2e.conftest import NewTenant
from e2e.fleet import Cluster, Fleet, ProxyProcess, ledger_spend, message, send

pytestmark = pytest.mark.cluster

CLIENTS_PER_PROXY = 3


class Traffic:
    """Clients sending priced requests to each proxy in a loop until stopped; they count what happened.

    Besides the quick ones, `slow` clients stream from the given proxy at 50 ms per event (about
    0.4 s per answer), so a kill finds requests in flight."""

    def __init__(self, proxies: list[ProxyProcess], key: str, slow: ProxyProcess) -> None:
        self._stop = threading.Event()
        self.outcomes: Counter[str] = Counter()
        self._lock = threading.Lock()
        clients = [(proxy, False) for proxy in proxies for _ in range(CLIENTS_PER_PROXY)] + [(slow, True)] * 2
        self._threads = [threading.Thread(target=self._client, args=(proxy, key, streaming), daemon=True)
                         for proxy, streaming in clients]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)

    def _client(self, proxy: ProxyProcess, key: str, streaming: bool) -> None:
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
        if streaming:
            headers["x-mock-delay-ms"] = "50"
        while not self._stop.is_set():
            try:  # the port changes when the proxy restarts: read it on every request
                response = httpx.post(f"{proxy.url}/v1/messages", json=message(stream=streaming), headers=headers,
                                      timeout=5)
                outcome = str(response.status_code)
            except httpx.HTTPError as error:
                outcome = type(error).__name__
                time.sleep(0.02)
            with self._lock:
                self.outcomes[outcome] += 1

    def wait_for(self, answered: int, timeout: float = 20.0) -> None:
        eventually(lambda: self.outcomes["200"] >= answered, timeout, f"{answered} answered requests")


def test_a_proxy_killed_mid_traffic_loses_and_doubles_nothing(
        fleet: Fleet, cluster: Cluster, new_tenant: NewTenant) -> None:
    tenant = new_tenant(limit="1000.00")
    victim, upstream = fleet.proxies[1], fleet.upstream
    assert upstream is not None
    before = len(upstream.messages())
    with Traffic(fleet.proxies, tenant.key, slow=victim) as traffic:
        traffic.wait_for(60)
        last = send(victim, tenant.key)  # answered, so journaled; its ledger line may still be in a batch
        victim.kill()  # SIGKILL at once: no shutdown, no ledger flush, no last report
        assert last.status_code == 200
        killed_at = traffic.outcomes["200"]
        traffic.wait_for(killed_at + 30)  # the others carry on
        victim.start()  # same name, state directory and ledger file
        restarted_at = traffic.outcomes["200"]
        traffic.wait_for(restarted_at + 60)
    assert traffic.outcomes["200"] > 0 and set(traffic.outcomes) <= {"200", "ConnectError", "RemoteProtocolError",
                                                                      "ReadError"}, traffic.outcomes

    time.sleep(0.2)  # the running proxies write their ledgers in batches, at most 20 ms apart
    ledgers = {proxy.name: proxy.ledger() for proxy in fleet.proxies}
    mine = [line for lines in ledgers.values() for line in lines if line["developer"] == tenant.developer]
    billed = ledger_spend(mine)
    journaled, ledgered = victim.journal_ids(), [line["requestId"] for line in ledgers[victim.name]]
    print(f"\nanswered {traffic.outcomes['200']}, ledger lines {len(mine)}, victim journal {len(journaled)} "
          f"ledger {len(ledgered)}, journaled without ledger line: {sorted(set(journaled) - set(ledgered))}")
    answered = traffic.outcomes["200"] + 1
    assert len(mine) >= answered, f"{answered - len(mine)} answered requests without a ledger line"
    assert last.headers["request-id"] in journaled, "the answer before the kill is not in the journal"

    # The victim: every journaled request has its ledger line, and no request was journaled twice.
    assert len(journaled) == len(set(journaled)), "a request journaled twice"
    missing = set(journaled) - set(ledgered)
    assert not missing, f"{len(missing)} journaled requests have no ledger line after the SIGKILL"

    # Requests in flight at the kill died with the proxy (the client saw its connection break), but
    # they were journaled as started: the restart settled them at their estimate, flagged, so every
    # request that reached the upstream (which bills it) has a ledger line.
    broken = traffic.outcomes["RemoteProtocolError"] + traffic.outcomes["ReadError"]
    interrupted = [line for line in ledgers[victim.name] if "interrupted" in line["flags"]]
    reached_upstream = len(upstream.messages()) - before
    assert len(mine) >= reached_upstream, f"{reached_upstream - len(mine)} upstream requests without a ledger line"
    assert len(interrupted) <= broken + 1, (len(interrupted), broken)  # +1: one started, not yet sent upstream
    assert all(line["outcome"] == "interrupted" and Decimal(line["costUSD"]) > 0 for line in interrupted)

    spent = eventually(lambda: (s := cluster.spent(tenant.namespace, tenant.budget)) == billed and s, 20.0,
                       f"Budget.status.spentUSD equal to the ledgers' ${billed}")
    assert spent == billed
    print(f"\nkill -9 mid-traffic: {traffic.outcomes}; status ${spent} = ledgers ${billed}; "
          f"{len(interrupted)} requests in flight at the kill settled at their estimate on restart")


def test_a_proxy_stopped_right_after_traffic_reports_its_last_spend(
        fleet: Fleet, cluster: Cluster, new_tenant: NewTenant) -> None:
    """SIGTERM, as on a rolling update: the pod may never come back under its name, so the spend it
    answered for since its last report must reach its SpendReport before it exits."""
    tenant = new_tenant(limit="1000.00")
    proxy = fleet.proxies[2]
    budget_id = f"{tenant.namespace}/{tenant.budget}"
    try:
        assert [send(proxy, tenant.key).status_code for _ in range(5)] == [200] * 5
        proxy.stop()  # at once: well inside the one-second report interval
        billed = ledger_spend([line for line in proxy.ledger() if line["developer"] == tenant.developer])
        assert billed == Decimal("0.30")
        assert cluster.reported(fleet.namespace, proxy.name, budget_id) == billed
        eventually(lambda: cluster.spent(tenant.namespace, tenant.budget) == billed, 15.0,
                   f"Budget.status at ${billed} with the proxy gone")
    finally:
        proxy.start()
