"""`spendgate proxy`: run the gateway.

Standalone (no cluster):  spendgate proxy --policies DIR [--keys-file F] --upstream URL --port N --admin-port M
Cluster (a ConfigMap):    spendgate proxy --bundle-configmap NS/spendgate-bundle --port N --admin-port M
                          spendgate proxy --bundle /etc/spendgate/bundle --port N --admin-port M  (mounted)

In a cluster the proxy always reports its spend and follows the fleet's: it reports to the namespace
the operator names in the bundle ConfigMap (or --report-namespace), and follows the Budgets of the
namespaces its bundle's budgets live in. Without a report namespace it refuses to start: a proxy
that enforces without reporting pauses on its own spend only, and Budget.status stays at $0.

The upstream key comes from --upstream-key-file (a mounted Secret) or the ANTHROPIC_API_KEY
environment variable; it is read once and lives only in memory. These flag names are an interface
(scripts, the quick start, the Helm chart): keep them.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import socket
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import kubernetes
import uvloop

from spendgate.adapters.journal import JOURNAL_NAME, SpendJournal, default_state_dir
from spendgate.adapters.kube import Kube, load_configuration
from spendgate.logic.tracker import SpendTracker
from spendgate.logic.windows import utc_now
from spendgate.policy import bundlemap
from spendgate.policy.bundle import BundleError
from spendgate.proxy.bundles import BundleFile, BundleSource, ConfigMapBundle, PolicyDirectory
from spendgate.proxy.enforce import BudgetAdmission, prune_forever
from spendgate.proxy.guard import ClientLimits
from spendgate.proxy.ledger import STDOUT
from spendgate.proxy.live import REQUEST_SECONDS, LiveSpend, Outage, retrying
from spendgate.proxy.metrics import ControlPlaneCollector
from spendgate.proxy.ratelimits import RateLimits
from spendgate.proxy.recovery import settle_interrupted
from spendgate.proxy.server import MIB, CloudUpstream, Proxy, Settings

if TYPE_CHECKING:
    from spendgate.proxy.telemetry import TelemetryConfig

logger = logging.getLogger("spendgate.proxy")

UPSTREAM_KEY_ENV = "ANTHROPIC_API_KEY"
NAMESPACE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # a DNS-1123 label
LEDGER_POSTGRES_ENV = "SPENDGATE_LEDGER_POSTGRES"
SPILL_NAME = "ledger-postgres.spill"
defaults = Settings(source=BundleFile(Path("bundle.json")), upstream_key="")


class ConfigError(Exception):
    """A setting that stops the proxy from starting; the message says which and why."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--policies", type=Path, metavar="DIR",
                        help="standalone: compile the policy manifests in DIR (recompiled when they change)")
    source.add_argument("--bundle", type=Path, metavar="PATH",
                        help="cluster: the mounted bundle ConfigMap (a directory) or a bundle file; reloaded "
                             "when the kubelet updates it (about a minute after the ConfigMap changes)")
    source.add_argument("--bundle-configmap", metavar="NS/NAME",
                        help="cluster: read the bundle ConfigMap through the API and watch it (about a second; "
                             "needs get/list/watch on it)")
    parser.add_argument("--keys-file", type=Path, metavar="F", help="standalone keys file (default: DIR/keys.json)")
    parser.add_argument("--upstream", default=defaults.upstream_url, metavar="URL",
                        help=f"the Anthropic API to forward to (default {defaults.upstream_url})")
    parser.add_argument("--upstream-key-file", type=Path, metavar="F",
                        help=f"file holding the upstream API key (default: ${UPSTREAM_KEY_ENV})")
    parser.add_argument("--host", default=defaults.host, help=f"client address (default {defaults.host})")
    parser.add_argument("--port", type=int, default=defaults.port, help=f"client port (default {defaults.port})")
    parser.add_argument("--admin-host", default=defaults.admin_host,
                        help=f"address of /livez, /readyz, /metrics (default {defaults.admin_host})")
    parser.add_argument("--admin-port", type=int, default=defaults.admin_port,
                        help=f"admin port (default {defaults.admin_port})")
    parser.add_argument("--ledger", default=STDOUT, metavar="PATH",
                        help="where the ledger goes: '-' for stdout (default) or a file, rotated by size")
    parser.add_argument("--ledger-max-mib", type=int, default=defaults.ledger_max_bytes // MIB,
                        help="rotate the ledger file at this size (default %(default)s MiB)")
    parser.add_argument("--ledger-backups", type=int, default=defaults.ledger_backups,
                        help="rotated ledger files to keep (default %(default)s)")
    parser.add_argument("--ledger-postgres", default=os.environ.get(LEDGER_POSTGRES_ENV), metavar="DSN",
                        help=f"also store every ledger line in PostgreSQL (default: ${LEDGER_POSTGRES_ENV}; keep "
                             "the password there or in PGPASSWORD, not on the command line)")
    parser.add_argument("--ledger-postgres-spill", type=Path, metavar="PATH",
                        help=f"where ledger lines wait while PostgreSQL is unreachable (default: "
                             f"STATE_DIR/{SPILL_NAME})")
    parser.add_argument("--max-body-mib", type=int, default=defaults.max_body_bytes // MIB,
                        help="largest Messages / count_tokens body (default %(default)s MiB, as Anthropic)")
    parser.add_argument("--upstream-timeout", type=float, default=defaults.read_timeout, metavar="SECONDS",
                        help="longest silence from the upstream before the request fails (default %(default)s)")
    parser.add_argument("--upstream-connect-timeout", type=float, default=defaults.connect_timeout,
                        metavar="SECONDS", help="connection timeout (default %(default)s)")
    clients = parser.add_argument_group("limits on clients (docs/proxy.md, \"Limits\")")
    clients.add_argument("--client-header-timeout", type=float, default=ClientLimits.header_timeout,
                         metavar="SECONDS", help="a request's headers must arrive within this (default %(default)s)")
    clients.add_argument("--client-body-timeout", type=float, default=ClientLimits.body_timeout, metavar="SECONDS",
                         help="a request's body must arrive within this (default %(default)s)")
    clients.add_argument("--client-idle-timeout", type=float, default=ClientLimits.idle_timeout, metavar="SECONDS",
                         help="an idle keep-alive connection is closed after this (default %(default)s)")
    clients.add_argument("--max-client-connections", type=int, default=ClientLimits.max_connections,
                         help="open client connections beyond this get 503 overloaded_error (default %(default)s)")
    clients.add_argument("--max-response-buffer-mib", type=int, default=defaults.max_buffered_response_bytes // MIB,
                         help="a non-streaming answer larger than this is streamed through, its usage read from "
                              "its tail (default %(default)s MiB)")
    enforcement = parser.add_argument_group("enforcement and the live spend loop")
    enforcement.add_argument("--state-dir", type=Path, metavar="DIR",
                             help="where the spend journal lives (default: $SPENDGATE_STATE_DIR, else "
                                  "~/.local/state/spendgate/PORT); it survives restarts, SIGKILL included")
    enforcement.add_argument("--report-namespace", metavar="NS",
                             help="cluster: where to write this proxy's SpendReport (the operator's namespace); "
                                  "default: what the bundle ConfigMap's report-namespace key says")
    enforcement.add_argument("--proxy-name", default=os.environ.get("POD_NAME") or socket.gethostname(),
                             help="this proxy's SpendReport name (default: $POD_NAME, else the host name)")
    enforcement.add_argument("--kubeconfig", type=Path, help="cluster: default in-cluster, then ~/.kube/config")
    enforcement.add_argument("--rate-limit-replicas", type=int, default=1, metavar="N",
                             help="enforce 1/N of each rate limit here, for N replicas sharing callers (default 1: "
                                  "each replica enforces the whole limit; docs/proxy.md, \"Rate limits\")")
    parser.add_argument("--reload-interval", type=float, default=defaults.reload_interval, metavar="SECONDS",
                        help="how often the bundle source is checked for changes (default %(default)s)")
    clouds = parser.add_argument_group("Claude on Amazon Bedrock and Google Vertex AI (docs/proxy.md, \"Bedrock "
                                       "and Vertex AI\")")
    clouds.add_argument("--bedrock-upstream", metavar="URL",
                        help="serve Bedrock's /model/{id}/invoke paths, forwarded here (e.g. "
                             "https://bedrock-runtime.us-east-1.amazonaws.com), SigV4-signed with the AWS "
                             "credentials of the standard chain")
    clouds.add_argument("--bedrock-region", metavar="REGION",
                        help="the SigV4 signing region (default: the one in --bedrock-upstream's host, else the "
                             "AWS configuration's)")
    clouds.add_argument("--vertex-upstream", metavar="URL",
                        help="serve Vertex AI's .../publishers/anthropic/models/{model}:rawPredict paths, forwarded "
                             "here (e.g. https://us-east5-aiplatform.googleapis.com), with a Google access token "
                             "from the default credentials (GOOGLE_APPLICATION_CREDENTIALS, workload identity)")
    parser.add_argument("--otlp-endpoint", metavar="URL",
                        help="export OpenTelemetry traces and metrics over OTLP/HTTP to this collector (e.g. "
                             "http://127.0.0.1:4318); default: $OTEL_EXPORTER_OTLP_ENDPOINT, else off")


def read_upstream_key(key_file: Path | None, required: bool = True) -> str:
    """The organisation's Anthropic key; `required` False: none is fine (a gateway for Bedrock or Vertex only)."""
    if key_file is not None:
        try:
            key = key_file.read_text().strip()
        except OSError as error:
            raise ConfigError(f"cannot read the upstream key file {key_file}: {error.strerror}") from None
        if not key:
            raise ConfigError(f"the upstream key file {key_file} is empty")
        return key
    key = os.environ.get(UPSTREAM_KEY_ENV, "").strip()
    if not key and required:
        raise ConfigError(f"no upstream key: set {UPSTREAM_KEY_ENV} or pass --upstream-key-file")
    return key


def configmap_name(args: argparse.Namespace) -> tuple[str, str]:
    namespace, _, name = args.bundle_configmap.partition("/")
    if not namespace or not name:
        raise ConfigError(f"--bundle-configmap wants NAMESPACE/NAME, not {args.bundle_configmap!r}")
    return namespace, name


def source_from(args: argparse.Namespace) -> BundleSource:
    if args.bundle_configmap is not None:
        return ConfigMapBundle(kube_configuration(args), *configmap_name(args))
    if args.bundle is not None:
        return BundleFile(args.bundle)
    return PolicyDirectory(args.policies, args.keys_file or args.policies / "keys.json")


def settings_from(args: argparse.Namespace) -> Settings:
    clouds = args.bedrock_upstream is not None or args.vertex_upstream is not None
    return Settings(
        source=source_from(args),
        upstream_key=read_upstream_key(args.upstream_key_file, required=not clouds),
        bedrock=bedrock_upstream(args),
        vertex=vertex_upstream(args),
        telemetry=telemetry_config(args),
        upstream_url=args.upstream,
        host=args.host,
        port=args.port,
        admin_host=args.admin_host,
        admin_port=args.admin_port,
        ledger=args.ledger,
        ledger_max_bytes=args.ledger_max_mib * MIB,
        ledger_backups=args.ledger_backups,
        max_body_bytes=args.max_body_mib * MIB,
        read_timeout=args.upstream_timeout,
        connect_timeout=args.upstream_connect_timeout,
        reload_interval=args.reload_interval,
        max_buffered_response_bytes=args.max_response_buffer_mib * MIB,
        client=ClientLimits(header_timeout=args.client_header_timeout, body_timeout=args.client_body_timeout,
                            idle_timeout=args.client_idle_timeout, max_connections=args.max_client_connections),
    )


def bedrock_upstream(args: argparse.Namespace) -> CloudUpstream | None:
    if args.bedrock_upstream is None:
        return None
    from spendgate.proxy import aws  # botocore: imported only by a gateway that serves Bedrock
    url = checked_url("--bedrock-upstream", args.bedrock_upstream)
    region = aws.region_of(url, args.bedrock_region)
    if region is None:
        raise ConfigError("--bedrock-upstream: no signing region: pass --bedrock-region, or set AWS_REGION")
    try:
        signer = aws.SigV4Signer(region)
    except Exception as error:  # any failure of the credential chain says the same: no credentials to sign with
        raise ConfigError(f"--bedrock-upstream: cannot sign for Amazon Bedrock: {error}") from None
    return CloudUpstream(url, signer, signer.refresh_forever)


def vertex_upstream(args: argparse.Namespace) -> CloudUpstream | None:
    if args.vertex_upstream is None:
        return None
    from spendgate.proxy import gcp  # google-auth: imported only by a gateway that serves Vertex AI
    url = checked_url("--vertex-upstream", args.vertex_upstream)
    try:
        token = gcp.GoogleToken()
    except Exception as error:  # no default credentials, a token endpoint that refuses or is away: no start
        raise ConfigError(f"--vertex-upstream: cannot get a Google access token ({type(error).__name__}: "
                          f"{error}); set GOOGLE_APPLICATION_CREDENTIALS or run with workload identity") from None
    return CloudUpstream(url, token, token.refresh_forever)


def checked_url(flag: str, url: str) -> str:
    if not url.startswith(("https://", "http://")):
        raise ConfigError(f"{flag} wants an http(s) URL, not {url!r}")
    return url


def telemetry_config(args: argparse.Namespace) -> TelemetryConfig | None:
    """Off unless a collector is named: the flag, or the SDK's OTEL_EXPORTER_OTLP_*ENDPOINT variables."""
    if args.otlp_endpoint is None and not any(name.startswith("OTEL_EXPORTER_OTLP") and name.endswith("ENDPOINT")
                                              for name in os.environ):
        return None
    from spendgate.proxy.telemetry import TelemetryConfigError, config_from  # the OpenTelemetry SDK, when on
    try:
        config = config_from(args.otlp_endpoint)
    except TelemetryConfigError as error:
        raise ConfigError(str(error)) from None
    return config if config.enabled else None


def kube_configuration(args: argparse.Namespace) -> kubernetes.client.Configuration:
    try:
        return load_configuration(args.kubeconfig, None)
    except (kubernetes.config.ConfigException, OSError) as error:
        raise ConfigError(f"no Kubernetes credentials (in-cluster or --kubeconfig): {error}") from None


def state_dir(args: argparse.Namespace) -> Path:
    return Path(args.state_dir) if args.state_dir is not None else default_state_dir(args.port)


def report_namespace(args: argparse.Namespace) -> tuple[str, str]:
    """Where a proxy in cluster mode reports its spend, and who says so. Refuses to guess."""
    if args.report_namespace:
        found, where = args.report_namespace, "--report-namespace"
    elif args.bundle_configmap is not None:
        namespace, name = configmap_name(args)
        where = f"ConfigMap {namespace}/{name}"
        found = _configmap_report_namespace(kube_configuration(args), namespace, name)
    else:
        key_file = (args.bundle if args.bundle.is_dir() else args.bundle.parent) / bundlemap.REPORT_NAMESPACE_KEY
        found, where = _file_report_namespace(key_file), str(key_file)
    if not found:
        raise ConfigError(f"cluster mode reports spend, and {where} does not say where (the operator writes its "
                          f"{bundlemap.REPORT_NAMESPACE_KEY} key): pass --report-namespace NS, the operator's "
                          f"namespace")
    if not NAMESPACE_NAME.fullmatch(found):
        raise ConfigError(f"{where} names {found[:80]!r} as the namespace to report spend to, which is no "
                          f"namespace name")
    return found, where


def _file_report_namespace(key_file: Path) -> str | None:
    try:
        return key_file.read_text().strip() if key_file.is_file() else None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read {key_file}: {error}") from None


def _configmap_report_namespace(configuration: kubernetes.client.Configuration, namespace: str, name: str
                                ) -> str | None:
    api = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(configuration))
    try:
        found = api.read_namespaced_config_map(name, namespace, _request_timeout=REQUEST_SECONDS)
    except Exception as error:  # any failure of the client (refused, unreachable, TLS, a bad answer) says the same
        raise ConfigError(f"cannot read ConfigMap {namespace}/{name}: {getattr(error, 'reason', error)}") from None
    return bundlemap.report_namespace({"data": found.data})


def build(args: argparse.Namespace) -> Proxy:
    """The proxy with budget enforcement, its journal, and (in a cluster) the live spend loop."""
    if args.policies is not None and args.report_namespace:
        raise ConfigError("--report-namespace is for cluster mode (--bundle or --bundle-configmap); "
                          "with --policies the journal is the spend store")
    try:
        journal = SpendJournal(state_dir(args) / JOURNAL_NAME)
    except OSError as error:
        raise ConfigError(f"cannot open the spend journal in {state_dir(args)}: {error.strerror}") from None
    if args.rate_limit_replicas < 1:
        raise ConfigError(f"--rate-limit-replicas must be at least 1, not {args.rate_limit_replicas}")
    tracker = SpendTracker(journal)
    budgets = BudgetAdmission(tracker, RateLimits(args.rate_limit_replicas))
    settings = settings_from(args)
    proxy = Proxy(settings, admission=budgets, spend_sink=budgets, budgets=budgets)
    if args.ledger_postgres:
        from spendgate.proxy.ledgersink import SinkConfigError, attach  # psycopg: only for a gateway that uses it

        try:
            attach(proxy.ledger.consumers, proxy.companions, proxy.finalizers, args.ledger_postgres,
                   args.ledger_postgres_spill or state_dir(args) / SPILL_NAME, proxy.metrics.registry)
        except SinkConfigError as error:
            raise ConfigError(str(error)) from None
    for cloud in (settings.bedrock, settings.vertex):
        if cloud is not None:
            proxy.companions.append(cloud.refresh)
    settle_interrupted(journal, tracker, proxy.ledger)  # before serving: a killed predecessor's requests
    live = None if args.policies is not None else live_loop(args, proxy, tracker)
    proxy.companions.append(partial(prune_forever, tracker, lambda: proxy.bundles.current.signed.bundle, live))
    return proxy


def live_loop(args: argparse.Namespace, proxy: Proxy, tracker: SpendTracker) -> LiveSpend:
    """Cluster mode: report spend, follow the fleet's, keep the bundle ConfigMap watched."""
    namespace, said_by = report_namespace(args)
    configuration = kube_configuration(args)
    outage = Outage()
    if isinstance(proxy.settings.source, ConfigMapBundle):
        watching = "watch the bundle ConfigMap"
        kube = Kube(configuration, REQUEST_SECONDS, heard=partial(outage.answered, watching))
        proxy.companions.append(partial(retrying, watching, partial(proxy.settings.source.follow, kube), outage,
                                        forever=True))

    live = LiveSpend(Kube(configuration, REQUEST_SECONDS), tracker, namespace, args.proxy_name,
                     lambda: proxy.bundles.current.signed.bundle, utc_now, outage)
    proxy.companions.append(live.run)
    proxy.finalizers.append(live.final_report)
    proxy.metrics.registry.register(ControlPlaneCollector(live.ages))
    logger.info("cluster mode: reporting spend as SpendReport %s/%s (namespace from %s) to %s; following the "
                "fleet's spend (FleetSpends) of the budgets it charges", namespace, args.proxy_name, said_by,
                configuration.host)
    return live


def run(args: argparse.Namespace) -> int:
    # Logs go to stderr, always: stdout may be the ledger.
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        proxy = build(args)
    except (ConfigError, BundleError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        uvloop.run(proxy.run_until_signalled())
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0

