"""Every example command in the docs runs, as a new user would run it (tests/docs/examples.py says
what counts and how the markdown marks cluster examples and the rare skipped command).

Each session runs in bash (`set -euo pipefail`, so any failing command fails the test) in a scratch
copy of the repository, with a fresh HOME, the suite's virtualenv and kubectl on PATH and nothing
else from the test's environment (no ANTHROPIC_API_KEY, no kubeconfig unless it is the cluster
session's). Two substitutions stand in for what this machine lacks: https://api.anthropic.com is
the mock upstream (spendgate.testing.upstream speaks the same wire format; there is no internet
here), and the documented ports are free ports, so several suites can share the machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.controlplane import REPO_ROOT, ControlPlane, binary_paths, free_loopback_ports, tail
from docs.examples import CLUSTER, MARKER, SKIP, Block, Session, all_blocks, blocks, commands, documents
from e2e.fleet import UpstreamThread

DOCUMENTED_PORTS = (8787, 8788, 8790, 8080, 8081)
SESSION_TIMEOUT = 300.0
# Not copied into the scratch repository: state, caches, and the virtualenv (linked instead).
LEFT_OUT = shutil.ignore_patterns(".git", ".venv", "var", "__pycache__", ".pytest_cache", ".mypy_cache",
                                  ".ruff_cache", "node_modules", "*.egg-info")

BLOCKS = all_blocks()
STANDALONE = [block for block in BLOCKS if not block.cluster]


def test_the_docs_have_examples_and_every_marker_is_understood() -> None:
    names = {block.document for block in BLOCKS}
    assert {"README.md", "docs/proxy.md", "docs/operator.md"} <= names
    assert sum(block.cluster for block in BLOCKS) >= 3
    for path in documents():
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            found = MARKER.fullmatch(line.strip())
            if found is not None:
                where = f"{path.relative_to(REPO_ROOT)}:{number}"
                assert found["what"] == CLUSTER or SKIP.fullmatch(found["what"]), f"{where}: unknown {line!r}"
    for block in BLOCKS:
        for command, reason in block.skips.items():
            assert reason.strip(), f"{block.name}: a skip needs its reason"
            assert any(line.startswith(command) for line in commands(block.code)), (
                f"{block.name}: skips {command!r}, which the block does not run")
        assert list(blocks(REPO_ROOT / block.document)), block.name


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamThread]:
    thread = UpstreamThread()
    yield thread
    thread.close()


@pytest.mark.parametrize("block", STANDALONE, ids=[block.name for block in STANDALONE])
def test_a_standalone_example_runs(block: Block, upstream: UpstreamThread, tmp_path: Path) -> None:
    run_session([block], upstream, tmp_path)


@pytest.mark.cluster
def test_the_cluster_examples_run_in_order_against_a_real_api_server(
        control_plane: ControlPlane, upstream: UpstreamThread, tmp_path: Path) -> None:
    """docs/operator.md starts the operator and creates alice's key, docs/proxy.md serves her through a
    proxy in cluster mode with no flag but its bundle ConfigMap, and waits for its report to reach
    Budget.status (a proxy that did not report by default never got there)."""
    cluster = [block for block in BLOCKS if block.cluster]
    run_session(cluster, upstream, tmp_path, kubeconfig=control_plane.kubeconfig)


def run_session(session_blocks: list[Block], upstream: UpstreamThread, workdir: Path,
                kubeconfig: Path | None = None) -> None:
    ports = dict(zip(DOCUMENTED_PORTS, free_loopback_ports(len(DOCUMENTED_PORTS)), strict=True))
    logs = workdir / "logs"
    logs.mkdir()
    session = Session(ports, upstream.url, logs)
    for block in session_blocks:
        session.add(block)
    checkout = scratch_repository(workdir / "repo")
    environment = new_user_environment(workdir, ports, kubeconfig)
    script = workdir / "session.sh"
    script.write_text(session.script())
    try:
        result = subprocess.run(["setpriv", "--pdeathsig", "KILL", "--", "bash", str(script)], cwd=checkout,
                                env=environment, capture_output=True, text=True, timeout=SESSION_TIMEOUT)
    except subprocess.TimeoutExpired as expired:
        raise AssertionError(f"the examples of {names(session_blocks)} did not finish within {SESSION_TIMEOUT:.0f} s"
                             f"\n{tail(str(expired.stderr or ''))}") from None
    servers = "\n".join(f"--- {log.name}\n{tail(log.read_text(errors='replace'))}" for log in session.servers)
    assert result.returncode == 0, (
        f"the examples of {names(session_blocks)} failed (exit {result.returncode}):\n"
        f"--- commands (bash -x)\n{tail(result.stderr, 60)}\n--- output\n{tail(result.stdout)}\n{servers}")


def names(session_blocks: list[Block]) -> str:
    return ", ".join(block.name for block in session_blocks)


def scratch_repository(target: Path) -> Path:
    """A copy of the working tree as a user's clone would be: a Git repository whose HEAD is the
    tree (docs use `HEAD:path`), sharing the suite's virtualenv. Its pyproject.toml is older than the
    virtualenv's stamp, so `make run` does not reinstall (into the suite's own virtualenv)."""
    shutil.copytree(REPO_ROOT, target, ignore=LEFT_OUT, symlinks=True)
    identity = {"GIT_AUTHOR_NAME": "docs", "GIT_AUTHOR_EMAIL": "docs@example.com", "GIT_COMMITTER_NAME": "docs",
                "GIT_COMMITTER_EMAIL": "docs@example.com", "PATH": os.environ["PATH"], "HOME": str(target)}
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "the docs' examples"]):
        subprocess.run(["git", *command], cwd=target, env=identity, check=True, capture_output=True)
    venv = REPO_ROOT / ".venv"
    (target / ".venv").symlink_to(venv)
    stamp = venv / ".installed"
    if stamp.exists():
        before = stamp.stat().st_mtime_ns - 1_000_000_000
        os.utime(target / "pyproject.toml", ns=(before, before))
    return target


def new_user_environment(workdir: Path, ports: dict[int, int], kubeconfig: Path | None) -> dict[str, str]:
    tools = workdir / "bin"
    tools.mkdir()
    (tools / "kubectl").symlink_to(binary_paths(["kubectl"])["kubectl"])
    home = Path(tempfile.mkdtemp(prefix="home-", dir=workdir))
    environment = {
        "PATH": os.pathsep.join([str(REPO_ROOT / ".venv" / "bin"), str(tools), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PORT": str(ports[8787]), "ADMIN_PORT": str(ports[8788]), "MOCK_PORT": str(ports[8790]),  # make run's
    }
    if kubeconfig is not None:
        environment["KUBECONFIG"] = str(kubeconfig)
    return environment
