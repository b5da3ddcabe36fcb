"""`spendgate proxy`: run the gateway.

Standalone (no cluster):  spendgate proxy --policies DIR [--keys-file F] --upstream URL --port N --admin-port M
Cluster (a ConfigMap):    spendgate proxy --bundle /etc/spendgate/bundle.json --port N --admin-port M

The upstream key comes from --upstream-key-file (a mounted Secret) or the ANTHROPIC_API_KEY
environment variable; it is read once and lives only in memory. These flag names are an interface
(scripts, the quick start, the Helm chart): keep them.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from functools import partial
from pathlib import Path

import kubernetes
import uvloop

from spendgate.adapters.journal import SpendJournal
from spendgate.adapters.kube import Kube, load_configuration
from spendgate.logic.tracker import SpendTracker
from spendgate.logic.windows import utc_now
from spendgate.policy.bundle import BundleError
from spendgate.proxy.bundles import BundleFile, BundleSource, ConfigMapBundle, PolicyDirectory
from spendgate.proxy.enforce import BudgetAdmission, prune_forever
from spendgate.proxy.guard import ClientLimits
from spendgate.proxy.ledger import STDOUT
from spendgate.proxy.live import LiveSpend, retrying
from spendgate.proxy.recovery import settle_interrupted
from spendgate.proxy.server import MIB, Proxy, Settings

UPSTREAM_KEY_ENV = "ANTHROPIC_API_KEY"
STATE_DIR_ENV = "SPENDGATE_STATE_DIR"
JOURNAL_NAME = "spend.journal"
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
                             help="cluster: report spend in this namespace's SpendReports (the operator's) and "
                                  "enforce on the fleet's spend; without it the proxy enforces on its own journal")
    enforcement.add_argument("--policy-namespace", action="append", default=[], metavar="NS",
                             help="cluster: a namespace whose Budgets' status to follow (repeatable; "
                                  "default: the report namespace)")
    enforcement.add_argument("--proxy-name", default=os.environ.get("POD_NAME") or socket.gethostname(),
                             help="this proxy's SpendReport name (default: $POD_NAME, else the host name)")
    enforcement.add_argument("--kubeconfig", type=Path, help="cluster: default in-cluster, then ~/.kube/config")
    parser.add_argument("--reload-interval", type=float, default=defaults.reload_interval, metavar="SECONDS",
                        help="how often the bundle source is checked for changes (default %(default)s)")


def read_upstream_key(key_file: Path | None) -> str:
    if key_file is not None:
        try:
            key = key_file.read_text().strip()
        except OSError as error:
            raise ConfigError(f"cannot read the upstream key file {key_file}: {error.strerror}") from None
        if not key:
            raise ConfigError(f"the upstream key file {key_file} is empty")
        return key
    key = os.environ.get(UPSTREAM_KEY_ENV, "").strip()
    if not key:
        raise ConfigError(f"no upstream key: set {UPSTREAM_KEY_ENV} or pass --upstream-key-file")
    return key


def source_from(args: argparse.Namespace) -> BundleSource:
    if args.bundle_configmap is not None:
        namespace, _, name = args.bundle_configmap.partition("/")
        if not namespace or not name:
            raise ConfigError(f"--bundle-configmap wants NAMESPACE/NAME, not {args.bundle_configmap!r}")
        return ConfigMapBundle(kube_configuration(args), namespace, name)
    if args.bundle is not None:
        return BundleFile(args.bundle)
    return PolicyDirectory(args.policies, args.keys_file or args.policies / "keys.json")


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        source=source_from(args),
        upstream_key=read_upstream_key(args.upstream_key_file),
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


def kube_configuration(args: argparse.Namespace) -> kubernetes.client.Configuration:
    try:
        return load_configuration(args.kubeconfig, None)
    except (kubernetes.config.ConfigException, OSError) as error:
        raise ConfigError(f"no Kubernetes credentials (in-cluster or --kubeconfig): {error}") from None


def state_dir(args: argparse.Namespace) -> Path:
    if args.state_dir is not None:
        return Path(args.state_dir)
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV])
    return Path.home() / ".local" / "state" / "spendgate" / str(args.port)


def build(args: argparse.Namespace) -> Proxy:
    """The proxy with budget enforcement, its journal, and (in a cluster) the live spend loop."""
    try:
        journal = SpendJournal(state_dir(args) / JOURNAL_NAME)
    except OSError as error:
        raise ConfigError(f"cannot open the spend journal in {state_dir(args)}: {error.strerror}") from None
    tracker = SpendTracker(journal)
    budgets = BudgetAdmission(tracker)
    settings = settings_from(args)
    proxy = Proxy(settings, admission=budgets, spend_sink=budgets)
    settle_interrupted(journal, tracker, proxy.ledger)  # before serving: a killed predecessor's requests
    if isinstance(settings.source, ConfigMapBundle):
        follow = partial(settings.source.follow, Kube(kube_configuration(args)))
        proxy.companions.append(partial(retrying, "watch the bundle ConfigMap", follow, forever=True))
    live = None
    if args.report_namespace:
        kube = Kube(kube_configuration(args))
        namespaces = tuple(args.policy_namespace) or (args.report_namespace,)
        live = LiveSpend(kube, tracker, args.report_namespace, args.proxy_name, namespaces, utc_now)
        proxy.companions.append(live.run)
        proxy.finalizers.append(live.final_report)
    proxy.companions.append(partial(prune_forever, tracker, lambda: proxy.bundles.current.signed.bundle, live))
    return proxy


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

