"""`spendgate injector`: the sidecar injection webhook (docs/injection.md).

    spendgate injector --settings sidecar.json --tls-secret NAME --webhook-configuration NAME \\
        --cert-host spendgate-injector.spendgate-system.svc
    spendgate injector --settings sidecar.json --tls-dir /etc/spendgate/tls   (cert-manager)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path

import kubernetes
from aiohttp import web
from pydantic import ValidationError

from spendgate.adapters.kube import Kube, load_configuration
from spendgate.operator.config import DEFAULT_NAMESPACE
from spendgate.operator.injector.certificates import Policy
from spendgate.operator.injector.metrics import InjectorMetrics
from spendgate.operator.injector.rotation import DirectoryWatcher, SecretKeeper
from spendgate.operator.injector.server import admin_app, webhook_app
from spendgate.operator.injector.settings import SidecarSettings
from spendgate.operator.injector.tls import ServingTLS

logger = logging.getLogger("spendgate.injector")

DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
defaults = Policy(hosts=())


class ConfigError(Exception):
    """A setting that stops the injector from starting; the message says which and why."""


def duration(text: str) -> timedelta:
    """`90d`, `2160h`, `30m`, `45s`."""
    match = DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90d, 12h, 30m or 45s")
    return timedelta(**{UNITS[match[2]]: float(match[1])})


def _days(delta: timedelta) -> str:
    return f"{delta.days}d"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", type=Path, required=True, metavar="FILE",
                        help="the sidecar to inject (JSON; the chart renders it from its injector.sidecar values)")
    parser.add_argument("--host", default="127.0.0.1", help="webhook address (default %(default)s; in a pod, its IP)")
    parser.add_argument("--port", type=int, default=9443, help="webhook port, HTTPS (default %(default)s)")
    parser.add_argument("--admin-host", default="127.0.0.1",
                        help="address of /livez, /readyz, /metrics (default %(default)s)")
    parser.add_argument("--admin-port", type=int, default=9444, help="admin port, HTTP (default %(default)s)")
    tls = parser.add_argument_group("certificates (one of --tls-secret and --tls-dir)")
    source = tls.add_mutually_exclusive_group(required=True)
    source.add_argument("--tls-secret", metavar="NAME",
                        help="issue and rotate the certificate ourselves, kept in this Secret of --namespace")
    source.add_argument("--tls-dir", type=Path, metavar="DIR",
                        help="serve tls.crt and tls.key from DIR (cert-manager's Secret, mounted), reloaded "
                             "when they change")
    tls.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", DEFAULT_NAMESPACE),
                     help="the namespace of --tls-secret (default: $POD_NAMESPACE or %(default)s)")
    tls.add_argument("--webhook-configuration", metavar="NAME",
                     help="with --tls-secret: the MutatingWebhookConfiguration whose CA bundle is kept current")
    tls.add_argument("--cert-host", action="append", default=[], metavar="NAME",
                     help="with --tls-secret: a DNS name or IP address the API server calls us by (repeatable)")
    tls.add_argument("--cert-validity", type=duration, default=defaults.validity, metavar="DURATION",
                     help=f"with --tls-secret: serving certificate lifetime (default {_days(defaults.validity)})")
    tls.add_argument("--renew-before", type=duration, default=defaults.renew_before, metavar="DURATION",
                     help=f"with --tls-secret: renew this long before expiry (default {_days(defaults.renew_before)})")
    tls.add_argument("--ca-validity", type=duration, default=defaults.ca_validity, metavar="DURATION",
                     help=f"with --tls-secret: CA lifetime (default {_days(defaults.ca_validity)})")
    tls.add_argument("--cert-check-interval", type=float, default=60.0, metavar="SECONDS",
                     help="with --tls-secret: look at the Secret and the CA bundle at least this often "
                          "(default %(default)s)")
    parser.add_argument("--kubeconfig", type=Path, help="default: in-cluster, then ~/.kube/config")


def load_settings(path: Path) -> SidecarSettings:
    try:
        return SidecarSettings.model_validate(json.loads(path.read_text()))
    except OSError as error:
        raise ConfigError(f"cannot read the sidecar settings {path}: {error.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"the sidecar settings {path} are not JSON: {error}") from None
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(document)'}: {e['msg']}" for e in error.errors())
        raise ConfigError(f"the sidecar settings {path} are invalid: {problems}") from None


def certificate_policy(args: argparse.Namespace) -> Policy:
    if args.tls_secret is None:
        return defaults
    if not args.webhook_configuration:
        raise ConfigError("--tls-secret needs --webhook-configuration (whose CA bundle to keep current)")
    policy = Policy(tuple(args.cert_host), args.cert_validity, args.renew_before, args.ca_validity)
    problem = policy.problem()
    if problem:
        raise ConfigError(f"{problem} (--cert-host, --cert-validity, --renew-before, --ca-validity)")
    return policy


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        settings, policy = load_settings(args.settings), certificate_policy(args)
        return asyncio.run(serve(args, settings, policy))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except kubernetes.config.ConfigException as error:
        print(f"error: no Kubernetes credentials (in-cluster or --kubeconfig): {error}", file=sys.stderr)
        return 2


async def serve(args: argparse.Namespace, settings: SidecarSettings, policy: Policy) -> int:
    tls = ServingTLS()
    metrics = InjectorMetrics(tls)
    kube: Kube | None = None
    if args.tls_dir is not None:
        watcher = DirectoryWatcher(args.tls_dir, tls, metrics)
        try:
            watcher.load()
        except (OSError, ValueError) as error:
            raise ConfigError(f"cannot load tls.crt and tls.key from {args.tls_dir}: {error}") from None
        keeping = watcher.run()

        def not_ready() -> str | None:
            return None
    else:
        kube = Kube(load_configuration(args.kubeconfig, None))
        keeper = SecretKeeper(kube, args.namespace, args.tls_secret, args.webhook_configuration, policy, tls,
                              metrics, interval=args.cert_check_interval)
        keeping = keeper.run()

        def not_ready() -> str | None:
            if not tls.loaded:
                return "no serving certificate yet (see the log)"
            return None if keeper.ca_published else "the webhook's CA bundle is not published yet"

    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    runners: list[web.AppRunner] = []
    keeper_task = asyncio.create_task(keeping, name="certificates")
    try:
        await _start(runners, admin_app(metrics, not_ready), args.admin_host, args.admin_port, None)
        while not tls.loaded and not stop.is_set() and not keeper_task.done():
            await asyncio.sleep(0.05)
        if tls.loaded:
            await _start(runners, webhook_app(settings, version("spendgate"), metrics), args.host, args.port,
                         tls)
            logger.info("injecting %s sidecars (image %s) on https://%s:%d/inject/{namespace,pod}",
                        settings.mode.lower(), settings.image, args.host, args.port)
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({stopping, keeper_task}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
    except OSError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        keeper_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper_task
        for runner in runners:
            await runner.cleanup()
        if kube is not None:
            await kube.close()
    if keeper_task.done() and not keeper_task.cancelled() and keeper_task.exception() is not None:
        logger.error("the certificate loop failed", exc_info=keeper_task.exception())
        return 1
    return 0


async def _start(runners: list[web.AppRunner], app: web.Application, host: str, port: int,
                 tls: ServingTLS | None) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    runners.append(runner)
    await web.TCPSite(runner, host, port, ssl_context=tls.context if tls else None).start()

