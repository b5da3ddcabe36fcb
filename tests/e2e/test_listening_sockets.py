"""Every socket the operator and the proxy listen on binds to an address that is a flag, loopback by
default, never 0.0.0.0 unless asked: checked on the real processes with psutil (prometheus_client's
start_http_server binds 0.0.0.0 unless told otherwise; so did the operator's metrics port)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import psutil
import pytest

from cluster.controlplane import ControlPlane, free_loopback_ports
from cluster.polling import eventually
from e2e.fleet import UPSTREAM_KEY, spendgate_command

EXAMPLES = Path(__file__).parents[2] / "examples" / "policies"


@contextlib.contextmanager
def running(arguments: Sequence[str], log: Path, environment: dict[str, str] | None = None
            ) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as output:
        process = subprocess.Popen(spendgate_command(*arguments), stdout=output, stderr=subprocess.STDOUT,
                                   env={**psutil.Process().environ(), **(environment or {})})
    try:
        yield process
    finally:
        process.terminate()
        process.wait(15)


def listening(process: subprocess.Popen[bytes], count: int, log: Path) -> set[tuple[str, int]]:
    """The (address, port) pairs the process listens on, once it listens on `count` of them."""
    def sockets() -> set[tuple[str, int]] | None:
        assert process.poll() is None, f"exited with {process.returncode}:\n{log.read_text()}"
        found = {(c.laddr.ip, c.laddr.port) for c in psutil.Process(process.pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN}
        return found if len(found) >= count else None

    return eventually(sockets, 60.0, f"{count} listening sockets")


@pytest.mark.cluster
def test_the_operator_listens_on_loopback_unless_given_an_address(control_plane: ControlPlane,
                                                                   tmp_path: Path) -> None:
    metrics, health = free_loopback_ports(2)
    common = ["operator", "--namespace", "default", "--kubeconfig", str(control_plane.kubeconfig)]

    with running([*common, "--metrics-port", str(metrics)], tmp_path / "default.log") as process:
        assert listening(process, 1, tmp_path / "default.log") == {("127.0.0.1", metrics)}

    given = [*common, "--metrics-host", "127.0.0.2", "--metrics-port", str(metrics),
             "--liveness", f"http://127.0.0.3:{health}/healthz"]
    with running(given, tmp_path / "given.log") as process:
        assert listening(process, 2, tmp_path / "given.log") == {("127.0.0.2", metrics), ("127.0.0.3", health)}


def test_the_proxy_listens_on_loopback_unless_given_an_address(tmp_path: Path) -> None:
    port, admin = free_loopback_ports(2)
    common = ["proxy", "--policies", str(EXAMPLES), "--keys-file", str(tmp_path / "keys.json"),
              "--state-dir", str(tmp_path / "state"), "--port", str(port), "--admin-port", str(admin)]
    key = {"ANTHROPIC_API_KEY": UPSTREAM_KEY}

    with running(common, tmp_path / "default.log", key) as process:
        assert listening(process, 2, tmp_path / "default.log") == {("127.0.0.1", port), ("127.0.0.1", admin)}

    with running([*common, "--host", "127.0.0.4", "--admin-host", "127.0.0.5"], tmp_path / "given.log", key
                 ) as process:
        assert listening(process, 2, tmp_path / "given.log") == {("127.0.0.4", port), ("127.0.0.5", admin)}
