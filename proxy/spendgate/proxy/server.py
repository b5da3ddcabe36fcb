"""Assembles a proxy from its settings and serves the client and admin ports on one event loop.

Used by `spendgate proxy` (main.py) and by the tests, which run it in-process on free ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import uvicorn

from spendgate.proxy.admin import AdminApp, Health
from spendgate.proxy.admission import Admission, ForwardAll
from spendgate.proxy.asgi import App
from spendgate.proxy.budgetviews import BudgetReader, ClientPort, OwnBudgets
from spendgate.proxy.bundles import BundleHolder, BundleSource
from spendgate.proxy.gateway import Gateway
from spendgate.proxy.guard import ClientLimits, guarded_protocol
from spendgate.proxy.ledger import STDOUT, LedgerWriter
from spendgate.proxy.metrics import ProxyMetrics
from spendgate.proxy.providers import Anthropic, Provider
from spendgate.proxy.settle import Settler, SpendSink
from spendgate.proxy.upstream import Authenticate, Upstream, api_key

if TYPE_CHECKING:  # imported only when export is on (the SDK is not free to import)
    from spendgate.proxy.telemetry import Telemetry, TelemetryConfig

logger = logging.getLogger("spendgate.proxy")
MIB = 1024 * 1024
BACKLOG = 2048


@dataclass(frozen=True)
class CloudUpstream:
    """A cloud's endpoint for Claude, and how the organisation's credentials go on each request."""

    url: str
    authenticate: Authenticate = field(repr=False)
    refresh: Callable[[], Coroutine[Any, Any, None]] = field(repr=False)  # keeps the credentials fresh, forever


@dataclass(frozen=True)
class Settings:
    source: BundleSource
    upstream_key: str = field(repr=False)  # never printed, not even in a repr
    upstream_url: str = "https://api.anthropic.com"
    host: str = "127.0.0.1"
    port: int = 8787
    admin_host: str = "127.0.0.1"
    admin_port: int = 8788
    ledger: str = STDOUT
    ledger_max_bytes: int = 100 * MIB
    ledger_backups: int = 5
    max_body_bytes: int = 32 * MIB  # Anthropic's limit for Messages and count_tokens
    max_passthrough_body_bytes: int = 256 * MIB  # ... and for Message Batches
    connect_timeout: float = 10.0
    read_timeout: float = 600.0  # Claude Code's own default request timeout (API_TIMEOUT_MS)
    reload_interval: float = 1.0
    # A non-streaming answer larger than this is streamed through, its usage read from its tail.
    max_buffered_response_bytes: int = 16 * MIB
    client: ClientLimits = field(default_factory=ClientLimits)
    bedrock: CloudUpstream | None = None  # Amazon Bedrock's runtime endpoint, SigV4-signed (bedrock.py)
    vertex: CloudUpstream | None = None  # Vertex AI's endpoint, with a Google access token (vertex.py)
    telemetry: TelemetryConfig | None = None  # OpenTelemetry export (telemetry.py); None: off


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Two servers share one process: the Proxy, not each server, handles SIGINT and SIGTERM."""
        yield


def _server(app: Any, protocol: type[asyncio.Protocol] | str = "httptools", idle_timeout: float = 5.0) -> _Server:
    config = uvicorn.Config(app, http=protocol, lifespan="off", access_log=False, server_header=False,
                            date_header=False, proxy_headers=False, log_config=None, log_level="warning",
                            timeout_keep_alive=idle_timeout)  # type: ignore[arg-type]  # used as a float
    return _Server(config)


def _listen(host: str, port: int) -> socket.socket:
    """Bound here rather than by uvicorn, so a busy port is an OSError to report, not a sys.exit()."""
    return socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                backlog=BACKLOG)


def describe(factory: Callable[[], Coroutine[Any, Any, None]]) -> str:
    """A companion's name for logs and metrics: `retrying`'s description, else the function's name."""
    if isinstance(factory, partial):
        text = next((arg for arg in factory.args if isinstance(arg, str)), None)
        return text or describe(factory.func)
    return getattr(factory, "__qualname__", repr(factory))


class Proxy:
    def __init__(self, settings: Settings, admission: Admission | None = None,
                 spend_sink: SpendSink | None = None, budgets: BudgetReader | None = None) -> None:
        """Loads the first bundle (a BundleError means nothing to serve); binds nothing yet. With
        `budgets`, the admin port serves /budgets and the client port a developer's own."""
        self.settings = settings
        # Tasks that run beside the servers for the proxy's lifetime (the live spend loop); add before start().
        self.companions: list[Callable[[], Coroutine[Any, Any, None]]] = []
        # Awaited once on stop, after in-flight requests have settled (the live loop's last report).
        self.finalizers: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self.metrics = ProxyMetrics()
        self.bundles = BundleHolder(settings.source, self.metrics)
        self.health = Health()
        self.ledger = LedgerWriter(settings.ledger, settings.ledger_max_bytes, settings.ledger_backups, self.metrics)
        self.providers = providers(settings)
        self.upstreams = [provider.upstream for provider in self.providers if provider.upstream is not None]
        self.telemetry = telemetry(settings.telemetry, self.metrics)
        servers = {provider.name: provider.upstream.address for provider in self.providers if provider.upstream}
        settler = Settler(self.ledger, self.metrics, spend_sink, self.telemetry, servers)
        gateway = Gateway(self.bundles, self.providers, admission or ForwardAll(), settler,
                          settings.max_body_bytes, settings.max_passthrough_body_bytes,
                          settings.max_buffered_response_bytes, settings.client.body_timeout)
        client_protocol = guarded_protocol(settings.client, self.metrics)
        client: App = gateway if budgets is None else ClientPort(gateway, OwnBudgets(self.bundles, budgets))
        self._servers = [_server(client, client_protocol, settings.client.idle_timeout),
                         _server(AdminApp(self.bundles, self.metrics, self.health, budgets))]
        self._tasks: list[asyncio.Task[None]] = []
        self.port = self.admin_port = 0

    async def start(self) -> None:
        """Bind both ports (OSError if one is taken), then serve; returns once both accept connections."""
        client = _listen(self.settings.host, self.settings.port)
        try:
            sockets = [client, _listen(self.settings.admin_host, self.settings.admin_port)]
        except OSError:
            client.close()
            raise
        self.port, self.admin_port = (sock.getsockname()[1] for sock in sockets)
        for upstream in self.upstreams:
            await upstream.start()
        if self.telemetry is not None:
            self.telemetry.start()
        self._tasks = [self._supervised(name, server.serve(sockets=[sock]))
                       for name, server, sock in zip(("client server", "admin server"), self._servers, sockets,
                                                     strict=True)]
        self._tasks.extend(self._supervised(describe(companion), companion()) for companion in self.companions)
        self._tasks.append(self._supervised("bundle watcher", self.bundles.watch(self.settings.reload_interval)))
        while not all(server.started for server in self._servers):
            ended = next((task for task in self._tasks if task.done()), None)
            if ended is not None:  # a server that stops before it started: surface why
                ended.result()
                raise RuntimeError("a server stopped while starting")
            await asyncio.sleep(0.002)
        upstreams = ", ".join(f"{provider.title} {provider.upstream.url}" for provider in self.providers
                              if provider.upstream is not None)
        logger.info("serving on %s:%d (admin %s:%d), upstream %s, bundle %s", self.settings.host, self.port,
                    self.settings.admin_host, self.admin_port, upstreams, self.bundles.current.version)
        if self.telemetry is not None:
            logger.info("exporting OpenTelemetry traces to %s and metrics to %s",
                        self.telemetry.config.traces_endpoint or "nowhere (off)",
                        self.telemetry.config.metrics_endpoint or "nowhere (off)")

    def _supervised(self, name: str, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task that must run as long as the proxy: if it ends on its own, the proxy says so loudly."""
        task = asyncio.create_task(work, name=name)
        task.add_done_callback(partial(self._ended, name))
        return task

    def _ended(self, name: str, task: asyncio.Task[None]) -> None:
        if self.health.stopping or task.cancelled():
            return
        error = task.exception()
        reason = f"{type(error).__name__}: {error}" if error is not None else "returned"
        self.health.stopped[name] = reason
        self.metrics.tasks_stopped.labels(name).inc()
        logger.error("%s stopped (%s): the proxy reports itself not ready and not live until restarted", name,
                     reason, exc_info=error)

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (they settle), then flush the ledger."""
        self.health.stopping = True
        for server in self._servers:
            server.should_exit = True
        background = self._tasks[len(self._servers):]  # the bundle watcher and the companions
        for task in background:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for finalize in self.finalizers:
            try:
                await finalize()
            except Exception:  # one failing finalizer must not keep the others or the ledger from closing
                logger.exception("finalizer failed while stopping")
        for upstream in self.upstreams:
            await upstream.close()
        self.ledger.close()
        if self.telemetry is not None:
            await asyncio.to_thread(self.telemetry.stop)

    async def run_until_signalled(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, stop.set)
        await self.start()
        await stop.wait()
        logger.info("shutting down")
        await self.stop()


def providers(settings: Settings) -> list[Provider]:
    """The front doors, in the order their paths are tried: Vertex AI's /v1/projects/ before Anthropic's /v1/."""
    def upstream(url: str, authenticate: Authenticate) -> Upstream:
        return Upstream(url, authenticate, settings.connect_timeout, settings.read_timeout)

    found: list[Provider] = []
    from spendgate.proxy.vertex import Vertex  # google-auth, imported with the route
    found.append(Vertex(upstream(settings.vertex.url, settings.vertex.authenticate) if settings.vertex else None))
    from spendgate.proxy.bedrock import Bedrock  # botocore, likewise
    found.append(Bedrock(upstream(settings.bedrock.url, settings.bedrock.authenticate) if settings.bedrock else None))
    anthropic = upstream(settings.upstream_url, api_key(settings.upstream_key)) if settings.upstream_key else None
    found.append(Anthropic(anthropic))
    return found


def telemetry(config: TelemetryConfig | None, metrics: ProxyMetrics) -> Telemetry | None:
    if config is None or not config.enabled:
        return None
    from prometheus_client import Counter

    from spendgate.proxy import telemetry as otel
    dropped = Counter("spendgate_telemetry_dropped", "Requests whose OpenTelemetry span and metrics were dropped "
                      "(the export queue was full, or the collector refused or was unreachable).",
                      registry=metrics.registry)
    failures = Counter("spendgate_telemetry_export_failures", "Failed OTLP exports, by signal.", ["signal"],
                       registry=metrics.registry)
    return otel.build(config, dropped, failures)
