"""A real, throwaway PostgreSQL server for the test suite, from Debian's package.

initdb into a temporary directory, listening on a free loopback port (and a unix socket in the
same directory), trust authentication, never the machine's own cluster. PostgreSQL refuses to run
as root, so as root the server runs as the `postgres` user the package creates (through
`runuser`); otherwise as whoever runs the tests. The binaries come from hack/install-postgres.sh
(which installs the package when missing) unless SPENDGATE_POSTGRES_BIN names their directory.

Tests stop and start the server to play outages and restarts; each test gets its own database.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg

from cluster.controlplane import LOOPBACK, REPO_ROOT, free_loopback_ports, tail

INSTALL_SCRIPT = REPO_ROOT / "hack" / "install-postgres.sh"
SUPERUSER = "spendgate"
SERVER_ACCOUNT = "postgres"  # the account Debian's package creates; used when the tests run as root
START_TIMEOUT_SECONDS = 60


class PostgresError(RuntimeError):
    """The server could not be installed, started or stopped; the message says why (with its log)."""


def server_bindir() -> Path:
    override = os.environ.get("SPENDGATE_POSTGRES_BIN")
    if override:
        return Path(override)
    result = subprocess.run(["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True)
    if result.returncode != 0:
        raise PostgresError(f"hack/install-postgres.sh failed ({result.returncode}):\n{tail(result.stderr)}")
    return Path(result.stdout.strip())


def _as_server_account() -> list[str]:
    """The command prefix that runs a server binary as an unprivileged account."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SERVER_ACCOUNT)
    except KeyError as error:
        raise PostgresError(f"running as root needs the {SERVER_ACCOUNT!r} account (Debian's package creates it)") \
            from error
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresError("running as root needs `runuser` (util-linux) to start PostgreSQL as another user")
    return [runuser, "-u", SERVER_ACCOUNT, "--"]


class PostgresServer:
    def __init__(self, bindir: Path, workdir: Path, port: int) -> None:
        self.bindir, self.workdir, self.port = bindir, workdir, port
        self.data = workdir / "data"
        self.log = workdir / "server.log"
        self._prefix = _as_server_account()

    @classmethod
    def start_new(cls) -> PostgresServer:
        workdir = Path(tempfile.mkdtemp(prefix="spendgate-postgres-"))
        server = cls(server_bindir(), workdir, free_loopback_ports(1)[0])
        try:
            server._hand_to_server_account()
            server._run("initdb", "-D", str(server.data), "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                        "--locale=C", "--no-sync")
            server.start()
        except BaseException:
            server.close()
            raise
        return server

    def _hand_to_server_account(self) -> None:
        if self._prefix:
            account = pwd.getpwnam(SERVER_ACCOUNT)
            os.chown(self.workdir, account.pw_uid, account.pw_gid)
        self.workdir.chmod(0o700)

    def _run(self, binary: str, *args: str) -> None:
        command: Sequence[str] = [*self._prefix, str(self.bindir / binary), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=START_TIMEOUT_SECONDS + 30)
        if result.returncode != 0:
            log = tail(self.log.read_text()) if self.log.exists() else ""
            raise PostgresError(f"{binary} {' '.join(args[:1])} failed ({result.returncode}):\n"
                                f"{tail(result.stdout + result.stderr)}\n{log}")

    def start(self) -> None:
        # fsync off: the tests play outages by stopping the server, never by crashing the machine.
        options = (f"-p {self.port} -k {self.workdir} -c listen_addresses={LOOPBACK} -c fsync=off "
                   "-c max_connections=200")
        self._run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-t",
                  str(START_TIMEOUT_SECONDS), "-o", options)

    def stop(self, mode: str = "fast") -> None:
        """`fast` (clients disconnected, clean shutdown) or `immediate` (as if it crashed)."""
        self._run("pg_ctl", "stop", "-D", str(self.data), "-m", mode, "-w")

    def restart(self) -> None:
        self.stop()
        self.start()

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{LOOPBACK}:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database for one test; returns its DSN."""
        name = f"test_{secrets.token_hex(4)}"
        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(PostgresError):  # already down; the directory goes anyway
                self.stop("immediate")
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
