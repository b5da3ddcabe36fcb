"""A real Kubernetes API server for the test suite: etcd + kube-apiserver, envtest-style.

No controller-manager, scheduler or kubelet run, so there is no garbage collection and
namespaces never finish deleting: tests create their own uniquely named namespaces and never
rely on cascading deletes.

The binaries come from hack/build-control-plane.sh (built once per machine into
~/.cache/spendgate/bin/) unless SPENDGATE_<COMPONENT> points at one, e.g. SPENDGATE_ETCD.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess
from types import TracebackType
from typing import IO, Any, Self

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-control-plane.sh"
CRDS_DIR = REPO_ROOT / "crds"
# The audit policy the docs recommend: tests read the admission policy's audit annotations from it.
AUDIT_POLICY = REPO_ROOT / "examples" / "gitops" / "audit-policy.yaml"

LOOPBACK = "127.0.0.1"
ADMIN_USER = "spendgate-test-admin"
KUBECONFIG_NAME = "spendgate-test"
FIELD_MANAGER = "spendgate-tests"
LOG_TAIL_LINES = 40
STOP_GRACE_SECONDS = 10.0
KUBECTL_TIMEOUT_SECONDS = 180.0  # a hung API server must not hang CI; longer than any `kubectl wait`
POLL_INTERVAL_SECONDS = 0.1


class ControlPlaneError(RuntimeError):
    """The control plane could not be built, started or used; the message says why."""


def binary_paths(components: Sequence[str]) -> dict[str, Path]:
    """Path of each component's binary: the SPENDGATE_<COMPONENT> override, else the build script's."""
    overrides = {name: os.environ.get(env_override(name)) for name in components}
    paths = {name: Path(path) for name, path in overrides.items() if path}
    to_build = [name for name in components if name not in paths]
    if to_build:
        paths.update(run_build_script(to_build))
    for name, path in paths.items():
        if not os.access(path, os.X_OK):
            raise ControlPlaneError(f"{name} binary {path} is missing or not executable")
    return paths


def env_override(component: str) -> str:
    return "SPENDGATE_" + component.upper().replace("-", "_")


def run_build_script(components: Sequence[str]) -> dict[str, Path]:
    """Builds (first run on a machine: minutes) or finds the cached binaries."""
    result = subprocess.run(["bash", str(BUILD_SCRIPT), *components], capture_output=True, text=True)
    if result.returncode != 0:
        script = BUILD_SCRIPT.relative_to(REPO_ROOT)
        raise ControlPlaneError(f"{script} failed with exit code {result.returncode}:\n{tail(result.stderr)}")
    # The script prints one "<component>=<path>" line per component.
    lines = (line.partition("=") for line in result.stdout.splitlines())
    return {name: Path(path) for name, _, path in lines}


def tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(text.splitlines()[-lines:])


def free_loopback_ports(count: int) -> list[int]:
    """Distinct ports the kernel just handed out (all held open together, so no two are equal).

    Another process could take one before our server binds it; start-up then fails with the log.
    """
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind((LOOPBACK, 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args)} failed:\n{tail(result.stderr)}")


@dataclass(frozen=True)
class Credentials:
    """Files kube-apiserver needs, plus what a client needs to talk to it."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    service_account_key: Path
    service_account_public_key: Path
    token_file: Path
    token: str


def new_certificate(cert: Path, key: Path, subject: str, *options: str) -> None:
    """An EC P-256 key (fast to generate) and certificate, valid far longer than a test session."""
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", subject, "-keyout", str(key), "-out", str(cert), *options,
    )  # fmt: skip


def create_credentials(directory: Path) -> Credentials:
    """A throwaway CA and serving certificate (so clients verify TLS instead of skipping it), the
    service-account signing key pair kube-apiserver requires, and a static admin token."""
    directory.mkdir()
    ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
    new_certificate(ca_cert, ca_key, "/CN=spendgate-test-ca")
    serving_cert, serving_key = directory / "apiserver.crt", directory / "apiserver.key"
    new_certificate(
        serving_cert, serving_key, "/CN=kube-apiserver",
        "-CA", str(ca_cert), "-CAkey", str(ca_key),
        "-addext", f"subjectAltName=IP:{LOOPBACK},DNS:localhost",
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "extendedKeyUsage=serverAuth",
    )  # fmt: skip
    sa_key, sa_public_key = directory / "sa.key", directory / "sa.pub"
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(sa_key))
    openssl("ec", "-in", str(sa_key), "-pubout", "-out", str(sa_public_key))
    token = secrets.token_urlsafe(32)
    token_file = directory / "tokens.csv"
    # token,user,uid,"groups": system:masters passes every RBAC check.
    token_file.write_text(f'{token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
    return Credentials(ca_cert, serving_cert, serving_key, sa_key, sa_public_key, token_file, token)


def write_kubeconfig(path: Path, server: str, credentials: Credentials) -> None:
    # JSON is YAML, so kubectl, the kubernetes client and kopf all read it; no YAML library needed.
    ca_data = base64.b64encode(credentials.ca_cert.read_bytes()).decode()
    cluster = {"server": server, "certificate-authority-data": ca_data}
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": KUBECONFIG_NAME, "cluster": cluster}],
        "users": [{"name": ADMIN_USER, "user": {"token": credentials.token}}],
        "contexts": [{"name": KUBECONFIG_NAME, "context": {"cluster": KUBECONFIG_NAME, "user": ADMIN_USER}}],
        "current-context": KUBECONFIG_NAME,
    }
    path.write_text(json.dumps(kubeconfig, indent=2))
    path.chmod(0o600)


class ManagedProcess:
    """A process this module started, with its stdout and stderr in one log file."""

    def __init__(self, name: str, command: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.command = list(command)
        self._log: IO[bytes] = log_path.open("wb")
        self._popen = self._spawn()

    def restart(self) -> None:
        """Start it again after stop(), with the same command; the log goes on."""
        self._log = self.log_path.open("ab")
        self._popen = self._spawn()

    def signal(self, number: signal.Signals) -> None:
        """E.g. SIGSTOP and SIGCONT: the process hangs, then carries on (only this PID)."""
        self._popen.send_signal(number)

    def _spawn(self) -> subprocess.Popen[bytes]:
        command = self.command
        return subprocess.Popen(
            # setpriv (util-linux) execs the command with a parent-death signal: if the test run is
            # killed before teardown, the kernel kills the process instead of leaving it on its ports.
            # KILL, because kube-apiserver takes ~10 s to shut down gracefully once etcd is gone.
            ["setpriv", "--pdeathsig", "KILL", "--", *command],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self._popen.pid  # setpriv execs the command: this is the component's own process

    def ensure_running(self) -> None:
        code = self._popen.poll()
        if code is not None:
            raise ControlPlaneError(f"{self.name} exited with code {code}:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return tail(self.log_path.read_text(errors="replace"))

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within the grace period; only this PID."""
        if self._popen.poll() is None:
            self._popen.send_signal(signal.SIGCONT)  # a paused process cannot act on SIGTERM
            self._popen.terminate()
            try:
                self._popen.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait()
        self._log.close()


def wait_until(ready: Callable[[], bool], process: ManagedProcess, timeout: float) -> None:
    """Polls `ready` until it is true, failing early (with the log tail) if the process dies."""
    deadline = time.monotonic() + timeout
    while not ready():
        process.ensure_running()
        if time.monotonic() > deadline:
            raise ControlPlaneError(f"{process.name} not ready after {timeout:.0f}s:\n{process.log_tail()}")
        time.sleep(POLL_INTERVAL_SECONDS)


def answers_ok(url: str, context: ssl.SSLContext | None = None, token: str | None = None) -> bool:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=2, context=context) as reply:
            status: int = reply.status
            return status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


class ControlPlane:
    """etcd + kube-apiserver on loopback with the repository's CRDs installed.

    `ControlPlane.start()` returns a running instance; use it as a context manager or call `stop()`.
    """

    def __init__(self, workdir: Path, kubectl_binary: Path) -> None:
        """Creates credentials and the kubeconfig in workdir; nothing runs yet."""
        self.workdir = workdir
        self.kubectl_binary = kubectl_binary
        self._credentials = create_credentials(workdir / "pki")
        self.token = self._credentials.token
        etcd_client_port, etcd_peer_port, apiserver_port = free_loopback_ports(3)
        self._etcd_url = f"http://{LOOPBACK}:{etcd_client_port}"
        self._etcd_peer_url = f"http://{LOOPBACK}:{etcd_peer_port}"
        self.server = f"https://{LOOPBACK}:{apiserver_port}"
        self.kubeconfig = workdir / "kubeconfig"
        self.audit_log = workdir / "audit.log"
        write_kubeconfig(self.kubeconfig, self.server, self._credentials)
        self.installed_crds: tuple[str, ...] = ()
        self._processes: list[ManagedProcess] = []
        self._ready: dict[str, Callable[[], bool]] = {}  # by component: how to tell it serves

    @classmethod
    def start(cls, crds_dir: Path = CRDS_DIR, timeout: float = 60.0) -> ControlPlane:
        """Builds or finds the binaries, starts etcd and kube-apiserver, installs crds_dir's CRDs."""
        binaries = binary_paths(["etcd", "kube-apiserver", "kubectl"])
        workdir = Path(tempfile.mkdtemp(prefix="spendgate-control-plane-"))
        try:
            control_plane = cls(workdir, binaries["kubectl"])
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        try:
            control_plane._start_etcd(binaries["etcd"], timeout)
            control_plane._start_apiserver(binaries["kube-apiserver"], timeout)
            control_plane._install_crds(crds_dir, timeout)
        except BaseException:
            control_plane.stop()
            raise
        return control_plane

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stops what this instance started (kube-apiserver before its etcd) and removes its files."""
        for process in reversed(self._processes):
            process.stop()
        self._processes.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> CompletedProcess[str]:
        """Runs the built kubectl against this API server; with `check`, a failure raises with stderr."""
        command = [str(self.kubectl_binary), f"--kubeconfig={self.kubeconfig}", *args]
        timeout = KUBECTL_TIMEOUT_SECONDS
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise ControlPlaneError(f"kubectl {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
        return result

    def apply(self, manifests: Path | str) -> CompletedProcess[str]:
        """Server-side applies a file or folder (a Path) or YAML text (a str); prints applied names.

        Conflicts are forced: tests own the fields they apply, even after an operator touched them.
        """
        source, stdin = (str(manifests), None) if isinstance(manifests, Path) else ("-", manifests)
        return self.kubectl(
            "apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "--force-conflicts",
            "-o", "name", "-f", source, stdin=stdin,
        )  # fmt: skip

    def _start_etcd(self, binary: Path, timeout: float) -> None:
        client_url, peer_url = self._etcd_url, self._etcd_peer_url
        etcd = self._launch("etcd", [
            str(binary),
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client_url}", f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            # Test data is disposable; fsync dominates etcd's write latency (etcd >= 3.5).
            "--unsafe-no-fsync=true",
        ])  # fmt: skip
        self._ready["etcd"] = lambda: answers_ok(f"{client_url}/health")
        wait_until(self._ready["etcd"], etcd, timeout)

    def _start_apiserver(self, binary: Path, timeout: float) -> None:
        credentials = self._credentials
        apiserver = self._launch("kube-apiserver", [
            str(binary),
            f"--etcd-servers={self._etcd_url}",
            f"--bind-address={LOOPBACK}", f"--advertise-address={LOOPBACK}",
            f"--secure-port={self.server.rsplit(':', 1)[1]}",
            f"--tls-cert-file={credentials.serving_cert}",
            f"--tls-private-key-file={credentials.serving_key}",
            f"--token-auth-file={credentials.token_file}",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.0.0.0/24",
            f"--service-account-issuer={self.server}",
            f"--service-account-key-file={credentials.service_account_public_key}",
            f"--service-account-signing-key-file={credentials.service_account_key}",
            # No controller-manager creates service accounts, so the admission plugin would reject pods.
            "--disable-admission-plugins=ServiceAccount",
            # Nothing needs the "kubernetes" Service endpoints, and a loopback address is invalid there.
            "--endpoint-reconciler-type=none",
            f"--audit-policy-file={AUDIT_POLICY}", f"--audit-log-path={self.audit_log}",
        ])  # fmt: skip
        context = ssl.create_default_context(cafile=str(credentials.ca_cert))
        ready = f"{self.server}/readyz"
        self._ready["kube-apiserver"] = lambda: answers_ok(ready, context, self.token)
        wait_until(self._ready["kube-apiserver"], apiserver, timeout)

    def _install_crds(self, crds_dir: Path, timeout: float) -> None:
        """Applies every manifest in crds_dir and waits until the API server serves each CRD."""
        if not any(crds_dir.glob("*.y*ml")):
            return  # `kubectl apply` refuses an empty folder
        applied = self.apply(crds_dir).stdout.split()
        crds = [name for name in applied if name.startswith("customresourcedefinition.")]
        self.kubectl("wait", "--for=condition=Established", f"--timeout={timeout:.0f}s", *crds)
        self.installed_crds = tuple(name.split("/", 1)[1] for name in crds)

    def audit_events(self) -> list[dict[str, Any]]:
        """The API server's audit log so far (the `log` backend writes one JSON event per line)."""
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line.strip()]

    # outages, for the tests of what the proxies and the operator do meanwhile ---------------------

    @contextlib.contextmanager
    def down(self, component: str, timeout: float = 60.0) -> Iterator[None]:
        """`component` (kube-apiserver or etcd) stopped (SIGTERM) for the body of the `with`, then
        started again on the same port with the same data; the `with` ends once it serves again."""
        process = self._process(component)
        process.stop()
        try:
            yield
        finally:
            process.restart()
            wait_until(self._ready[component], process, timeout)

    @contextlib.contextmanager
    def hung(self, component: str) -> Iterator[None]:
        """`component` frozen (SIGSTOP) for the body of the `with`: it accepts connections and answers
        nothing, as a hung process or a black-holed network does; then it carries on (SIGCONT)."""
        process = self._process(component)
        process.signal(signal.SIGSTOP)
        try:
            yield
        finally:
            process.signal(signal.SIGCONT)

    def pid(self, component: str) -> int:
        """The process id of `component` (kube-apiserver or etcd), e.g. for a benchmark's CPU figures."""
        return self._process(component).pid

    def _process(self, component: str) -> ManagedProcess:
        return next(process for process in self._processes if process.name == component)

    def _launch(self, name: str, command: Sequence[str]) -> ManagedProcess:
        process = ManagedProcess(name, command, self.workdir / f"{name}.log")
        self._processes.append(process)
        return process
