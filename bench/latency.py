"""Sequential latency client: one keep-alive connection per target, targets interleaved in rounds.

The same client measures every target, so its own overhead cancels out in "added latency" (p50
through a gateway minus p50 straight to the mock). Each round gives every target a block of
requests, in an order rotated round by round, so slow drift of the machine (frequency, other load)
lands on all targets alike. While one target is measured, the other servers are frozen (SIGSTOP).
Blocking sockets and httptools' C parser keep the client's cost small and steady.

    python bench/latency.py --spec spec.json      # prints JSON: samples per target, in microseconds
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httptools

RECV_BYTES = 1 << 18


@dataclass
class Target:
    name: str
    host: str
    port: int
    headers: dict[str, str]
    path: str = "/v1/messages?beta=true"
    pgid: int | None = None  # the server's process group: frozen (SIGSTOP) while other targets are measured


@dataclass
class Response:
    status: int = 0
    complete: bool = False
    keep_alive: bool = True
    body_bytes: int = 0
    parts: list[bytes] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        return b"".join(self.parts)


class _Parsed:
    """httptools callbacks for one response; the body is kept only when asked for (probes)."""

    def __init__(self, response: Response, keep_body: bool) -> None:
        self.response = response
        self.keep_body = keep_body

    def on_body(self, body: bytes) -> None:
        self.response.body_bytes += len(body)
        if self.keep_body:
            self.response.parts.append(body)

    def on_message_complete(self) -> None:
        self.response.complete = True


def request_bytes(target: Target, body: bytes) -> bytes:
    lines = [f"POST {target.path} HTTP/1.1", f"host: {target.host}:{target.port}",
             "content-type: application/json", f"content-length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in target.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection:
    """A keep-alive HTTP/1.1 connection that reconnects when the server closes it."""

    def __init__(self, target: Target, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self.sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.target.host, self.target.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def send(self, payload: bytes, keep_body: bool = False) -> Response:
        """One request/response exchange; raises OSError on connection failure."""
        if self.sock is None:
            self.sock = self._connect()
        response = Response()
        parser = httptools.HttpResponseParser(_Parsed(response, keep_body))
        try:
            self.sock.sendall(payload)
            while not response.complete:
                data = self.sock.recv(RECV_BYTES)
                if not data:
                    raise ConnectionResetError("server closed the connection mid-response")
                parser.feed_data(data)
        except (OSError, httptools.HttpParserError):
            self.close()
            raise
        response.status = parser.get_status_code()
        if not parser.should_keep_alive():
            self.close()
        return response


@dataclass
class Samples:
    latencies_us: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    last_error: str = ""


def exchange(connection: Connection, payload: bytes, samples: Samples | None) -> None:
    started = time.perf_counter_ns()
    try:
        response = connection.send(payload)
    except (OSError, httptools.HttpParserError) as error:
        if samples is not None:
            samples.errors += 1
            samples.last_error = f"{type(error).__name__}: {error}"
        return
    elapsed_us = (time.perf_counter_ns() - started) / 1000
    if samples is None:
        return
    if response.status == 200:
        samples.latencies_us.append(elapsed_us)
    else:
        samples.errors += 1
        samples.statuses[response.status] = samples.statuses.get(response.status, 0) + 1


def measure(targets: list[Target], body: bytes, rounds: int, block: int, settle: int = 5, pause_s: float = 0.05,
            timeout: float = 30.0) -> dict[str, Samples]:
    """`rounds` rounds; in each, every target gets a block of `block` recorded requests, the order of
    the targets rotated round by round. Before each block: a pause and `settle` unrecorded requests,
    so that work a gateway leaves behind after answering (background logging, say) is charged to that
    gateway's own block, never to the next target's."""
    connections = [Connection(target, timeout) for target in targets]
    payloads = [request_bytes(target, body) for target in targets]
    results = {target.name: Samples() for target in targets}
    try:
        for round_number in range(rounds):
            for offset in range(len(targets)):
                index = (round_number + offset) % len(targets)
                only_running(targets, targets[index])
                time.sleep(pause_s)
                for _ in range(settle):
                    exchange(connections[index], payloads[index], None)
                for _ in range(block):
                    exchange(connections[index], payloads[index], results[targets[index].name])
    finally:
        only_running(targets, None)
        for connection in connections:
            connection.close()
    return results


def only_running(targets: list[Target], current: Target | None) -> None:
    """Freeze every other target's server so that its timers and background work cannot disturb the
    one being measured; with `current` None, thaw them all."""
    for target in targets:
        if target.pgid is None or target.pgid == (current.pgid if current else None):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(target.pgid, signal.SIGSTOP if current is not None else signal.SIGCONT)
    if current is not None and current.pgid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(current.pgid, signal.SIGCONT)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of unsorted values."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def _load_spec(path: Path) -> tuple[list[Target], bytes, int, int]:
    spec: dict[str, Any] = json.loads(path.read_text())
    targets = [Target(**target) for target in spec["targets"]]
    return targets, Path(spec["body_file"]).read_bytes(), int(spec["rounds"]), int(spec["block"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, required=True,
                        help="JSON: targets [{name, host, port, headers}], body_file, rounds, block")
    args = parser.parse_args()
    targets, body, rounds, block = _load_spec(args.spec)
    results = measure(targets, body, rounds, block)
    json.dump({name: {"latencies_us": samples.latencies_us, "errors": samples.errors,
                      "statuses": samples.statuses, "last_error": samples.last_error}
               for name, samples in results.items()}, sys.stdout)


if __name__ == "__main__":
    main()
