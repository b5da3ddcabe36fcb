"""The control plane away while three proxies serve traffic: they keep serving, say so once per
outage, export the growing age of their last report and of their FleetSpend watches, report within
about two seconds of the API server's return, and Budget.status ends equal to their ledgers to the
cent.

Measured before this was fixed (2026-12-04, three proxies under traffic): after the API server was
down 60 s, the proxies reported again only 20 s after it was back (the retry wait had grown to
30 s and never reset), and an API server hang or an etcd outage logged nothing at all.

These tests stop and freeze processes of the control plane, so they run on one of their own, not
on the suite's shared API server.
"""

from __future__ import annotations

import re
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from cluster.controlplane import ControlPlane
from cluster.polling import eventually
from e2e.fleet import (
    Cluster,
    Fleet,
    ProxyProcess,
    cost_center,
    developer_budget,
    ledger_spend,
    quiet_time_zone,
    send,
)
from spendgate.proxy.live import REQUEST_SECONDS, RETRY_CAP

pytestmark = pytest.mark.cluster

PROXIES = 3
OUTAGE = 15.0  # seconds: long enough for the old backoff to have grown to 16 s
REPORTED_WITHIN = 3.0  # seconds from the API server's return to each proxy's report in the API
# With etcd away the API server holds a write until the proxy's request deadline ends it; the next one
# gets through. So after etcd's return: at most that deadline, plus a retry.
REPORTED_AFTER_ETCD_WITHIN = REQUEST_SECONDS + RETRY_CAP
OUTAGE_WARNING = re.compile(r"spendgate\.proxy\.live WARNING the API server does not answer")
OUTAGE_OVER = re.compile(r"spendgate\.proxy\.live INFO the API server answers again after")


@dataclass(frozen=True)
class Tenant:
    budget: str
    namespace: str
    key: str
    key_name: str

    @property
    def budget_id(self) -> str:
        return f"{self.namespace}/{self.budget}"

    def spent_through(self, proxy: ProxyProcess) -> Decimal:
        """What this tenant spent through `proxy`, from its ledger (the proxies serve every test of the module)."""
        return ledger_spend([line for line in proxy.ledger() if line["keyName"] == self.key_name])


@pytest.fixture(scope="module")
def own_control_plane() -> Iterator[ControlPlane]:
    with ControlPlane.start() as started:
        yield started


@pytest.fixture(scope="module")
def fleet(own_control_plane: ControlPlane) -> Iterator[Fleet]:
    cluster = Cluster(own_control_plane)
    run = secrets.token_hex(3)
    namespace, policies = cluster.namespace(f"sg-outage-{run}"), cluster.namespace(f"outage-budgets-{run}")
    with tempfile.TemporaryDirectory(prefix="spendgate-outage-") as workdir, \
            Fleet.running(own_control_plane, Path(workdir), namespace, policies, PROXIES) as running:
        yield running


@pytest.fixture
def tenant(fleet: Fleet, own_control_plane: ControlPlane) -> Tenant:
    cluster = Cluster(own_control_plane)
    run = secrets.token_hex(3)
    developer, center, budget = f"dev-{run}", f"cc-{run}", f"dev-{run}-daily"
    cluster.apply(cost_center(center, f"CC-{run}", members=(developer,)),
                  developer_budget(budget, fleet.policy_namespace, center, developer, "10000.00", quiet_time_zone()))
    key = cluster.create_key(fleet.namespace, f"key-{run}", developer, center)
    fleet.wait_for_bundle(lambda bundle: any(k["name"] == f"key-{run}" for k in bundle["keys"]), "the new key")
    fleet.wait_until_loaded()
    return Tenant(budget, fleet.policy_namespace, key, f"key-{run}")


@dataclass
class Traffic:
    """Requests round-robin over the proxies from a thread, until stopped; every answer is kept."""

    proxies: list[ProxyProcess]
    key: str
    statuses: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Traffic:
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        number = 0
        while not self._stop.is_set():
            try:
                self.statuses.append(send(self.proxies[number % len(self.proxies)], self.key).status_code)
            except httpx.HTTPError:
                self.statuses.append(0)
            number += 1
            time.sleep(0.02)


def metric(proxy: ProxyProcess, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{proxy.admin_port}/metrics", timeout=5).text
    return max(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def follows(proxy: ProxyProcess, namespace: str) -> bool:
    """Whether the proxy watches the FleetSpends of `namespace` (its watch age is exported)."""
    text = httpx.get(f"http://127.0.0.1:{proxy.admin_port}/metrics", timeout=5).text
    return f'spendgate_fleet_spend_watch_age_seconds{{namespace="{namespace}"}}' in text


def log_since(proxy: ProxyProcess, offset: int) -> str:
    assert proxy.process is not None
    return proxy.process.log.read_bytes()[offset:].decode(errors="replace")


def log_size(proxy: ProxyProcess) -> int:
    assert proxy.process is not None
    return proxy.process.log.stat().st_size


def reported_within(cluster: Cluster, fleet: Fleet, tenant: Tenant, back: float) -> dict[str, float]:
    """Seconds from `back` until each proxy's SpendReport holds its whole ledger."""
    arrived: dict[str, float] = {}

    def all_reported() -> bool:
        for proxy in fleet.proxies:
            if proxy.name not in arrived and cluster.reported(fleet.namespace, proxy.name, tenant.budget_id) == \
                    tenant.spent_through(proxy):
                arrived[proxy.name] = time.monotonic() - back
        return len(arrived) == len(fleet.proxies)

    try:
        eventually(all_reported, 30.0, "every proxy's report after the outage", interval=0.05)
    except AssertionError as error:
        raise AssertionError(f"{error}; reported {arrived}\n{fleet.logs()}") from None
    return arrived


Outage = Callable[[], AbstractContextManager[None]]


def through_an_outage(fleet: Fleet, tenant: Tenant, cluster: Cluster, outage: Outage, back: Callable[[], bool],
                      watches_go_quiet: bool = True, bound: float = REPORTED_WITHIN) -> None:
    """Traffic through `outage`, stopped just before the control plane returns, so that each proxy's
    first report after the return holds its whole ledger. `back`: the control plane takes writes again.
    `watches_go_quiet`: whether the FleetSpend watches lose the API server too (not when only etcd is away:
    the API server keeps serving watches from its cache)."""
    offsets = {proxy.name: log_size(proxy) for proxy in fleet.proxies}
    traffic = Traffic(fleet.proxies, tenant.key).start()
    time.sleep(2.0)
    # A fresh proxy starts its live loop after a random delay of up to a few seconds (fleet start-up is
    # spread): the outage must find every proxy following the tenant's spend, or it has no watch to age.
    eventually(lambda: all(follows(proxy, tenant.namespace) for proxy in fleet.proxies), 30.0,
               "every proxy following the tenant's FleetSpend", interval=0.1)
    with outage():
        time.sleep(OUTAGE)
        ages = {proxy.name: (metric(proxy, "spendgate_spend_report_age_seconds"),
                             metric(proxy, "spendgate_fleet_spend_watch_age_seconds")) for proxy in fleet.proxies}
        traffic.stop()
    eventually(back, 60.0, "the control plane taking writes again", interval=0.05)
    returned = time.monotonic()
    arrived = reported_within(cluster, fleet, tenant, returned)

    print(f"\nreports after the return: {', '.join(f'{n} {s:.2f} s' for n, s in sorted(arrived.items()))}; "
          f"ages while away: {ages}; {len(traffic.statuses)} requests")
    assert traffic.statuses and set(traffic.statuses) == {200}, "the proxies stopped serving"
    assert max(arrived.values()) <= bound, arrived
    for name, (report_age, watch_age) in ages.items():
        assert report_age >= OUTAGE - 3, (name, report_age)
        assert watch_age >= OUTAGE - 3 or not watches_go_quiet, (name, watch_age)
    for proxy in fleet.proxies:  # the outage ends once every activity heard back (watches retry within 2 s)
        eventually(lambda: OUTAGE_OVER.search(log_since(proxy, offsets[proxy.name])), 10.0,  # noqa: B023
                   f"{proxy.name} saying the outage is over")
        log = log_since(proxy, offsets[proxy.name])
        assert len(OUTAGE_WARNING.findall(log)) == 1, f"{proxy.name}:\n{log}"
        assert len(OUTAGE_OVER.findall(log)) == 1, f"{proxy.name}:\n{log}"
        assert metric(proxy, "spendgate_spend_report_age_seconds") < 16  # a heartbeat at most
        if watches_go_quiet:  # reopened, so heard again
            eventually(lambda: metric(proxy, "spendgate_fleet_spend_watch_age_seconds") < 16, 30.0,  # noqa: B023
                       f"{proxy.name}'s FleetSpend watch hearing the API server again")
    total = sum((tenant.spent_through(proxy) for proxy in fleet.proxies), Decimal(0))
    eventually(lambda: cluster.spent(tenant.namespace, tenant.budget) == total, 30.0, f"${total} in Budget.status")


def takes_writes(cluster: Cluster, namespace: str) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            cluster.core.patch_namespace(namespace, {"metadata": {"annotations": {"outage-probe": str(time.time())}}},
                                         _request_timeout=1)
        except Exception:  # any failure means "not yet": refused, timed out, 5xx while etcd is away
            return False
        return True
    return probe


def test_the_api_server_down(fleet: Fleet, tenant: Tenant, own_control_plane: ControlPlane) -> None:
    cluster = Cluster(own_control_plane)
    through_an_outage(fleet, tenant, cluster, lambda: own_control_plane.down("kube-apiserver"),
                      takes_writes(cluster, fleet.namespace))


def test_the_api_server_hung(fleet: Fleet, tenant: Tenant, own_control_plane: ControlPlane) -> None:
    cluster = Cluster(own_control_plane)
    through_an_outage(fleet, tenant, cluster, lambda: own_control_plane.hung("kube-apiserver"),
                      takes_writes(cluster, fleet.namespace))


def test_etcd_down(fleet: Fleet, tenant: Tenant, own_control_plane: ControlPlane) -> None:
    cluster = Cluster(own_control_plane)
    through_an_outage(fleet, tenant, cluster, lambda: own_control_plane.down("etcd"),
                      takes_writes(cluster, fleet.namespace), watches_go_quiet=False,
                      bound=REPORTED_AFTER_ETCD_WITHIN)
