"""`spendgate proxy` as users run it: standalone, from policy files, as a separate process."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import orjson

from proxy.proxy_harness import UPSTREAM_KEY, message_request
from spendgate.testing.upstream import MockUpstream


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def spendgate(*args: str, key: str | None = UPSTREAM_KEY) -> asyncio.subprocess.Process:
    environment = {name: value for name, value in os.environ.items() if name != "ANTHROPIC_API_KEY"}
    if key is not None:
        environment["ANTHROPIC_API_KEY"] = key
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "spendgate.cli", *args, env=environment,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def until_ready(admin: str, process: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(500):
            assert process.returncode is None, (await process.communicate())[1].decode()
            try:
                if (await client.get(f"{admin}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.01)
    raise AssertionError("the proxy never became ready")


async def test_quick_start(policies: Path, tmp_path: Path, upstream: MockUpstream) -> None:
    keys_file = tmp_path / "keys.json"
    created = await spendgate("keys", "create", "--developer", "carol", "--cost-center", "platform",
                              "--keys-file", str(keys_file))
    out, _ = await created.communicate()
    key = out.decode().strip()
    port, admin_port = free_port(), free_port()
    ledger = tmp_path / "ledger.jsonl"
    proxy = await spendgate("proxy", "--policies", str(policies), "--keys-file", str(keys_file), "--upstream",
                            upstream.url, "--port", str(port), "--admin-port", str(admin_port), "--ledger", str(ledger))
    try:
        await until_ready(f"http://127.0.0.1:{admin_port}", proxy)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"x-api-key": key}) as client:
            response = await client.post("/v1/messages", json=message_request(stream=True))
        assert response.status_code == 200
        assert upstream.requests[-1].header("x-api-key") == UPSTREAM_KEY
    finally:
        proxy.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(proxy.communicate(), timeout=10)
    assert proxy.returncode == 0, stderr.decode()
    [line] = [orjson.loads(text) for text in ledger.read_bytes().splitlines()]
    assert (line["developer"], line["costCenter"], line["outcome"]) == ("carol", "platform", "ok")
    assert key not in stderr.decode() and UPSTREAM_KEY not in stderr.decode()


async def test_upstream_key_from_a_file(policies: Path, tmp_path: Path, upstream: MockUpstream) -> None:
    (tmp_path / "secret").write_text("upstream-key-from-a-mounted-secret\n")
    port, admin_port = free_port(), free_port()
    proxy = await spendgate("proxy", "--policies", str(policies), "--keys-file", str(tmp_path / "none.json"),
                            "--upstream", upstream.url, "--upstream-key-file", str(tmp_path / "secret"),
                            "--port", str(port), "--admin-port", str(admin_port), key=None)
    try:
        await until_ready(f"http://127.0.0.1:{admin_port}", proxy)
    finally:
        proxy.send_signal(signal.SIGTERM)
        await proxy.communicate()
    assert proxy.returncode == 0


async def run_to_exit(*args: str, key: str | None = UPSTREAM_KEY) -> tuple[int | None, str]:
    process = await spendgate("proxy", *args, key=key)
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    return process.returncode, stderr.decode()


async def test_refuses_to_start_without_what_it_needs(policies: Path, tmp_path: Path) -> None:
    no_key = await run_to_exit("--policies", str(policies), key=None)
    assert no_key == (2, "error: no upstream key: set ANTHROPIC_API_KEY or pass --upstream-key-file\n")

    empty_key_file = tmp_path / "empty"
    empty_key_file.write_text("\n")
    assert (await run_to_exit("--policies", str(policies), "--upstream-key-file", str(empty_key_file)))[0] == 2

    (policies / "99-bad.yaml").write_text("apiVersion: spendgate.io/v1alpha1\nkind: Budget\nmetadata: {name: b}\n"
                                          "spec: {costCenter: platform}\n")
    code, stderr = await run_to_exit("--policies", str(policies))
    assert code == 2 and "policy errors" in stderr and "Budget" in stderr

    bundle = tmp_path / "bundle.json"
    bundle.write_text("{}")
    code, stderr = await run_to_exit("--bundle", str(bundle))
    assert code == 2 and "schemaVersion" in stderr


async def test_a_port_in_use_is_a_clear_error(policies: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, stderr = await run_to_exit("--policies", str(policies), "--keys-file", str(tmp_path / "k.json"),
                                         "--port", str(taken.getsockname()[1]), "--admin-port", str(free_port()))
    assert code == 1 and "address already in use" in stderr.lower()


def test_the_gateway_imports_an_optional_client_only_when_its_flag_asks_for_it() -> None:
    """psycopg, botocore and the OpenTelemetry SDK cost a gateway memory and start-up time (about 10 MB
    for psycopg alone): one that does not use them never loads them."""
    probe = ("import sys\nfrom spendgate.cli import build_parser\nimport spendgate.proxy.main as main\n"
             "args = build_parser('proxy').parse_args(['proxy', '--policies', 'examples/policies'])\n"
             "main.settings_from(args)\n"
             "print(sorted({name.split('.')[0] for name in sys.modules} & {'psycopg', 'botocore', 'opentelemetry'}))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60,
                            cwd=Path(__file__).resolve().parents[2], env={**os.environ, "ANTHROPIC_API_KEY": "sk-x"})
    assert result.stdout.splitlines()[-1:] == ["[]"], result.stdout + result.stderr
