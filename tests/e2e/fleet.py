"""A spendgate fleet on the suite's real API server: the operator and several `spendgate proxy`
processes in cluster mode, one mock Anthropic upstream, and a stand-in for the kubelet.

Used by tests/e2e and by bench/overshoot.py. Every process started here is stopped by its owner's
`close()` (and, should the test run itself die, by the kernel: each child gets a parent-death signal).

There is no kubelet, so nothing mounts the bundle ConfigMap into the proxies. `BundleMirror` does
what the kubelet does for a ConfigMap volume (timestamped directory, atomic `..data` symlink swap,
one user-visible symlink per key), but every 0.1 s instead of about once a minute: the figures
measured through it are the proxy's and the operator's, not the kubelet's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
import kubernetes
import urllib3
from aiohttp import web

from cluster.controlplane import ControlPlane, free_loopback_ports, tail
from cluster.polling import eventually
from spendgate.adapters.keysecrets import LABEL as VIRTUAL_KEY_LABEL
from spendgate.adapters.keysfile import new_key
from spendgate.testing.upstream import MockUpstream, Reply, Scenario

T = TypeVar("T")
UPSTREAM_KEY = "e2e-upstream-secret-5b2d8e-not-a-real-key"
OPUS, SONNET, HAIKU = "claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"
# 10,000 input and 1,000 output tokens: $0.06 on Opus 5.5 ($4 / $20 per MTok), $0.03 on Sonnet 5.5.
PRICED = Scenario(content=({"type": "text", "text": "ok"},), usage={"input_tokens": 10_000, "output_tokens": 1_000})
COST = {OPUS: Decimal("0.06"), SONNET: Decimal("0.03")}
# A probe costs nothing: it shows what a proxy would decide now (the x-spendgate-* headers) without spending.
PROBE_HEADER = "x-e2e-probe"
FREE = Scenario(content=({"type": "text", "text": "probe"},), usage={"input_tokens": 0, "output_tokens": 0})
CLIENT_TIMEOUT = 10.0


def quiet_time_zone(now: datetime | None = None, margin: timedelta = timedelta(minutes=15)) -> str:
    """A time zone whose day does not end within `margin` of now, so a test's daily window holds still
    (proxies run on the real clock)."""
    now = now or datetime.now(UTC)
    for name in ("Europe/Berlin", "Asia/Tokyo", "America/New_York", "UTC"):
        local = now.astimezone(ZoneInfo(name))
        midnight = (local + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        since = local - local.replace(hour=0, minute=0, second=0, microsecond=0)
        if midnight - local > margin and since > margin:
            return name
    raise AssertionError("no quiet time zone found")  # impossible: the candidates are hours apart


# the upstream ----------------------------------------------------------------------------------


class ProbingUpstream(MockUpstream):
    """The mock Anthropic upstream; a request carrying PROBE_HEADER gets the free reply."""

    def _reply_for(self, request: web.Request) -> Reply:
        if request.headers.get(PROBE_HEADER):
            return Reply(scenario=FREE)
        return super()._reply_for(request)


class UpstreamThread:
    """The mock upstream on its own event loop in a thread, so synchronous tests can use it."""

    def __init__(self, default: Reply | None = None) -> None:
        self.mock = ProbingUpstream(default=default or Reply(scenario=PRICED))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mock-upstream", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.mock.start(), self._loop).result(10)

    @property
    def url(self) -> str:
        return self.mock.url

    def messages(self) -> list[dict[str, Any]]:
        """The bodies of the priced Messages requests received so far (probes left out)."""
        return [r.json() for r in list(self.mock.requests)
                if r.path == "/v1/messages" and not r.header(PROBE_HEADER)]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.mock.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


# the kubelet's part ----------------------------------------------------------------------------


class BundleMirror:
    """Keeps a directory in step with the bundle ConfigMap the way the kubelet updates a ConfigMap
    volume (atomic `..data` swap), polling every `interval` seconds instead of about once a minute."""

    def __init__(self, control_plane: ControlPlane, namespace: str, directory: Path, name: str = "spendgate-bundle",
                 interval: float = 0.1) -> None:
        self.directory = directory
        self._namespace, self._name, self._interval = namespace, name, interval
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(control_plane.kubeconfig), client_configuration=configuration)
        self._api = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))
        self._version = ""
        self.swaps = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bundle-mirror", daemon=True)
        directory.mkdir(parents=True, exist_ok=True)

    def start(self, timeout: float = 30.0) -> BundleMirror:
        self._thread.start()
        eventually(lambda: self.swaps > 0, timeout, f"the bundle ConfigMap {self._namespace}/{self._name}")
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():  # the API server may be away (outage tests): the kubelet waits too
            with contextlib.suppress(kubernetes.client.ApiException, urllib3.exceptions.HTTPError, OSError):
                self.sync()
            self._stop.wait(self._interval)

    def sync(self) -> None:
        found = self._api.read_namespaced_config_map(self._name, self._namespace)
        if found.metadata.resource_version == self._version:
            return
        files = {key: value.encode() for key, value in (found.data or {}).items()}
        files |= {key: base64.b64decode(value) for key, value in (found.binary_data or {}).items()}
        self._write(files)
        self._version = found.metadata.resource_version
        self.swaps += 1

    def _write(self, files: dict[str, bytes]) -> None:
        """kubelet's AtomicWriter: a fresh timestamped directory, `..data` swapped to it by rename."""
        stamp = self.directory / f"..{datetime.now(UTC):%Y_%m_%d_%H_%M_%S.%f}"
        stamp.mkdir()
        for key, content in files.items():
            (stamp / key).write_bytes(content)
        data, staged = self.directory / "..data", self.directory / "..data_tmp"
        previous = os.readlink(data) if data.is_symlink() else None
        staged.unlink(missing_ok=True)
        staged.symlink_to(stamp.name)
        os.replace(staged, data)
        for key in files:
            visible = self.directory / key
            if not visible.is_symlink():
                visible.symlink_to(Path("..data") / key)
        for visible in self.directory.iterdir():
            if not visible.name.startswith("..") and visible.name not in files:
                visible.unlink()
        if previous is not None:
            shutil.rmtree(self.directory / previous, ignore_errors=True)


# processes -------------------------------------------------------------------------------------


def spendgate_command(*args: str) -> list[str]:
    # setpriv (util-linux): the kernel kills the child if the test run dies before its teardown.
    return ["setpriv", "--pdeathsig", "KILL", "--", sys.executable, "-m", "spendgate.cli", *args]


class Process:
    """A child process with its output in a log file; stop() is SIGTERM then SIGKILL, this PID only."""

    def __init__(self, name: str, command: Sequence[str], log: Path, environment: dict[str, str] | None = None
                 ) -> None:
        self.name, self.command, self.log = name, list(command), log
        self._environment = environment
        self._popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self._popen = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                           env={**os.environ, **(self._environment or {})})

    @property
    def running(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def ensure_running(self) -> None:
        assert self.running, f"{self.name} exited with {self._popen and self._popen.poll()}:\n{self.log_tail()}"

    def log_tail(self, lines: int = 30) -> str:
        return tail(self.log.read_text(errors="replace"), lines) if self.log.exists() else "(no log)"

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, no last report."""
        if self._popen is not None and self._popen.poll() is None:
            self._popen.send_signal(signal.SIGKILL)
            self._popen.wait(10)

    def stop(self, grace: float = 10.0) -> int | None:
        if self._popen is None:
            return None
        if self._popen.poll() is None:
            self._popen.terminate()
            try:
                self._popen.wait(grace)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait(10)
        return self._popen.returncode


@dataclass
class ProxyProcess:
    """`spendgate proxy` in cluster mode, as the docs run it: bundle from the mirrored directory; it
    reports where the ConfigMap's report-namespace key says and follows its budgets' namespaces."""

    name: str
    workdir: Path
    bundle: Path
    upstream: str
    kubeconfig: Path
    extra: tuple[str, ...] = ()
    port: int = 0
    admin_port: int = 0
    process: Process | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ledger_path(self) -> Path:
        return self.workdir / "ledger.jsonl"

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def journal_path(self) -> Path:
        return self.state_dir / "spend.journal"

    def start(self, timeout: float = 30.0) -> ProxyProcess:
        """Start (or start again, same name, state directory and ledger) and wait until it serves."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port, self.admin_port = free_loopback_ports(2)
        command = spendgate_command(
            "proxy", "--bundle", str(self.bundle), "--upstream", self.upstream,
            "--port", str(self.port), "--admin-port", str(self.admin_port),
            "--ledger", str(self.ledger_path), "--state-dir", str(self.state_dir),
            "--proxy-name", self.name, "--kubeconfig", str(self.kubeconfig), *self.extra)
        self.starts += 1
        self.process = Process(self.name, command, self.workdir / f"proxy-{self.starts}.log",
                               {"ANTHROPIC_API_KEY": UPSTREAM_KEY})
        self.process.start()
        eventually(self._ready, timeout, f"proxy {self.name} ready")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        self.process.ensure_running()
        try:
            return httpx.get(f"http://127.0.0.1:{self.admin_port}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def bundle_hash(self) -> str | None:
        try:
            ready = httpx.get(f"http://127.0.0.1:{self.admin_port}/readyz", timeout=1).json()
        except (httpx.HTTPError, ValueError):
            return None
        return str((ready.get("bundle") or {}).get("contentHash"))

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def ledger(self) -> list[dict[str, Any]]:
        if not self.ledger_path.exists():
            return []
        lines = self.ledger_path.read_bytes().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def journal_ids(self) -> list[str]:
        if not self.journal_path.exists():
            return []
        ids = []
        for line in self.journal_path.read_bytes().splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                ids.append(str(json.loads(line)["r"]))
        return ids


def ledger_spend(lines: Sequence[dict[str, Any]]) -> Decimal:
    return sum((Decimal(line["costUSD"]) for line in lines if line["endpoint"] == "messages"), Decimal(0))


class OperatorProcess(Process):
    """`spendgate operator` as a subprocess, as it runs in its Deployment."""

    def __init__(self, control_plane: ControlPlane, namespace: str, policy_namespaces: Sequence[str], workdir: Path,
                 write_interval: float = 1.0) -> None:
        command = spendgate_command(
            "operator", "--namespace", namespace, *(a for ns in policy_namespaces for a in ("--policy-namespace", ns)),
            "--kubeconfig", str(control_plane.kubeconfig), "--metrics-port", "0",
            "--write-interval", str(write_interval))
        super().__init__("operator", command, workdir / "operator.log")


# the API ---------------------------------------------------------------------------------------


class Cluster:
    """What the tests do to the API: objects in, status out, `kubectl get budgets` as people see it."""

    def __init__(self, control_plane: ControlPlane) -> None:
        self.control_plane = control_plane
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(control_plane.kubeconfig), client_configuration=configuration)
        client = kubernetes.client.ApiClient(configuration)
        self.custom = kubernetes.client.CustomObjectsApi(client)
        self.core = kubernetes.client.CoreV1Api(client)

    def namespace(self, name: str) -> str:
        self.control_plane.kubectl("create", "namespace", name)
        return name

    def apply(self, *documents: dict[str, Any]) -> None:
        """`kubectl apply` (server-side), as a GitOps sync would."""
        self.control_plane.apply("\n---\n".join(json.dumps(document) for document in documents))

    def budget_status(self, namespace: str, name: str) -> dict[str, Any]:
        found = self.custom.get_namespaced_custom_object("spendgate.io", "v1alpha1", namespace, "budgets", name)
        status: dict[str, Any] = found.get("status") or {}
        return status

    def spent(self, namespace: str, name: str) -> Decimal | None:
        spent = self.budget_status(namespace, name).get("spentUSD")
        return Decimal(spent) if spent is not None else None

    def reported(self, namespace: str, proxy: str, budget_id: str) -> Decimal | None:
        """What a proxy's SpendReport holds for a budget (any window), or None."""
        try:
            found = self.custom.get_namespaced_custom_object("spendgate.io", "v1alpha1", namespace, "spendreports",
                                                             proxy)
        except kubernetes.client.ApiException as error:
            if error.status == 404:
                return None
            raise
        entries = [Decimal(entry["spentUSD"]) for entry in found["spec"].get("entries") or []
                   if entry["budget"] == budget_id]
        return sum(entries, Decimal(0)) if entries else None

    def create_key(self, namespace: str, name: str, developer: str, cost_center: str) -> str:
        """A virtual-key Secret (the operator puts its hash into the bundle); returns the plaintext key."""
        key = new_key()
        body = {"metadata": {"name": name, "namespace": namespace, "labels": {VIRTUAL_KEY_LABEL: "true"}},
                "stringData": {"key": key, "developer": developer, "costCenter": cost_center}}
        self.core.create_namespaced_secret(namespace, body)
        return key

    def create_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self.core.create_namespaced_secret(namespace, {"metadata": {"name": name, "namespace": namespace},
                                                       "stringData": data})

    def kubectl_get_budget(self, namespace: str, name: str) -> dict[str, str]:
        """One row of the real `kubectl get budgets`, by column title."""
        output = self.control_plane.kubectl("get", "budgets", "-n", namespace, name).stdout
        header, row = output.splitlines()[:2]
        return dict(zip(re.split(r"\s{2,}", header.strip()), re.split(r"\s{2,}", row.strip()), strict=True))


def cost_center(name: str, code: str, members: Sequence[str] = (),
                targets: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    return {"apiVersion": "spendgate.io/v1alpha1", "kind": "CostCenter", "metadata": {"name": name},
            "spec": {"code": code, "members": list(members), "alertTargets": list(targets)}}


def developer_budget(name: str, namespace: str, cost_center: str, developer: str, limit: str, time_zone: str,
                     policy: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"costCenter": cost_center, "scope": {"kind": "Developer", "name": developer},
                            "limitUSD": limit, "window": {"period": "Daily", "timeZone": time_zone},
                            "thresholds": {"alertPercent": 80, "downgradePercent": 95, "pausePercent": 110}}
    if policy:
        spec["routingPolicyRef"] = policy
    return {"apiVersion": "spendgate.io/v1alpha1", "kind": "Budget", "metadata": {"name": name, "namespace": namespace},
            "spec": spec}


def routing_policy(name: str, namespace: str) -> dict[str, Any]:
    return {"apiVersion": "spendgate.io/v1alpha1", "kind": "RoutingPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": {"cascade": [OPUS, SONNET, HAIKU]}}


# the client ------------------------------------------------------------------------------------


def message(model: str = OPUS, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "max_tokens": 128_000, "stream": stream,
            "messages": [{"role": "user", "content": "Rename the helper and run the tests."}]}


def send(proxy: ProxyProcess, key: str, probe: bool = False, stream: bool = False) -> httpx.Response:
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
    if probe:
        headers[PROBE_HEADER] = "1"
    return httpx.post(f"{proxy.url}/v1/messages", json=message(stream=stream), headers=headers,
                      timeout=CLIENT_TIMEOUT)


def state_seen(proxy: ProxyProcess, key: str) -> str:
    """The state this proxy enforces for the key's fullest budget right now, from a free probe."""
    response = send(proxy, key, probe=True)
    if response.status_code == 429:
        return "Paused"
    assert response.status_code == 200, response.text
    return response.headers["x-spendgate-budget-state"]


@dataclass
class Fleet:
    """The operator, N proxies, the upstream and the bundle mirror; `close()` stops all of it."""

    control_plane: ControlPlane
    workdir: Path
    namespace: str
    policy_namespace: str
    upstream: UpstreamThread | None = None
    upstream_url: str = ""
    operator: OperatorProcess | None = None
    mirror: BundleMirror | None = None
    proxies: list[ProxyProcess] = field(default_factory=list)

    @classmethod
    @contextlib.contextmanager
    def running(cls, control_plane: ControlPlane, workdir: Path, namespace: str, policy_namespace: str,
                proxies: int, upstream_url: str | None = None, write_interval: float = 1.0,
                proxy_args: tuple[str, ...] = ()) -> Iterator[Fleet]:
        fleet = cls(control_plane, workdir, namespace, policy_namespace)
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            if upstream_url is None:
                fleet.upstream = UpstreamThread()
                upstream_url = fleet.upstream.url
            fleet.upstream_url = upstream_url
            fleet.operator = OperatorProcess(control_plane, namespace, (policy_namespace,), workdir, write_interval)
            fleet.operator.start()
            fleet.mirror = BundleMirror(control_plane, namespace, workdir / "bundle")
            fleet.mirror.start(timeout=60)
            for number in range(proxies):
                fleet.add_proxy(f"proxy-{chr(ord('a') + number)}", proxy_args).start()
            yield fleet
        finally:
            fleet.close()

    def add_proxy(self, name: str, extra: tuple[str, ...] = ()) -> ProxyProcess:
        assert self.mirror is not None
        proxy = ProxyProcess(name, self.workdir / name, self.mirror.directory, self.upstream_url,
                             self.control_plane.kubeconfig, extra)
        self.proxies.append(proxy)
        return proxy

    def wait_for_bundle(self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = 20.0) -> None:
        """Until the mirrored bundle satisfies `predicate` (e.g. it holds a new key)."""
        def current() -> bool:
            path = self.workdir / "bundle" / "bundle.json"
            with contextlib.suppress(OSError, ValueError):
                return predicate(json.loads(path.read_bytes())["bundle"])
            return False
        eventually(current, timeout, what)

    def wait_until_loaded(self, timeout: float = 20.0) -> str:
        """Until every running proxy serves the bundle now in the mirrored directory; returns its hash."""
        wanted = json.loads((self.workdir / "bundle" / "bundle.json").read_bytes())["contentHash"]

        def serving(proxy: ProxyProcess) -> bool:
            return proxy.bundle_hash() == wanted

        for proxy in self.proxies:
            if proxy.process is not None and proxy.process.running:
                eventually(functools.partial(serving, proxy), timeout, f"{proxy.name} serving bundle {wanted[7:19]}")
        return str(wanted)

    def close(self) -> None:
        for proxy in self.proxies:
            proxy.stop()
        if self.mirror is not None:
            self.mirror.close()
        if self.operator is not None:
            self.operator.stop()
        if self.upstream is not None:
            self.upstream.close()

    def logs(self) -> str:
        parts = []
        for proxy in self.proxies:
            if proxy.process is not None:
                parts.append(f"--- {proxy.name}\n{proxy.process.log_tail(15)}")
        if self.operator is not None:
            parts.append(f"--- operator\n{self.operator.log_tail(15)}")
        return "\n".join(parts)
