"""Operations: health and metrics on the admin port, hot reload, the ledger file, and secrets kept out of it all."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import pytest

from proxy.proxy_harness import UPSTREAM_KEY, Keys, Running, StartGateway, message_request
from spendgate.adapters.keysfile import create_key
from spendgate.adapters.policyfiles import compile_directory
from spendgate.policy.bundle import dumps
from spendgate.proxy.bundles import BundleFile
from spendgate.proxy.ledger import LINE_FIELDS, SCHEMA_VERSION, LedgerWriter

LEDGER_DOC = Path(__file__).parents[2] / "docs" / "ledger.md"


def documented_fields() -> set[str]:
    """The field names in docs/ledger.md's table (a row may name several: `keyName`, `developer`, ...)."""
    table = LEDGER_DOC.read_text().split("## Fields", 1)[1].split("###", 1)[0]
    return {name for row in table.splitlines() if row.startswith("| `")
            for name in re.findall(r"`(\w+)`", row.split("|")[1])}


async def admin_get(gateway: Running, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=gateway.admin_url) as admin:
        return await admin.get(path)


async def test_health_endpoints(gateway: Running) -> None:
    live, ready, missing = [await admin_get(gateway, path) for path in ("/livez", "/readyz", "/nope")]
    assert live.status_code == 200
    assert ready.status_code == 200
    detail = ready.json()
    assert detail["ready"] is True
    assert detail["bundle"]["version"] == gateway.proxy.bundles.current.version
    assert detail["lastLoadError"] is None
    assert missing.status_code == 404


async def test_metrics_count_money_tokens_and_requests(gateway: Running, keys: Keys) -> None:
    async with gateway.client(keys.alice, **{"x-mock-scenario": "cache"}) as client:
        await client.post("/v1/messages", json=message_request(stream=True))
    async with gateway.client(keys.alice, **{"x-mock-scenario": "overloaded"}) as client:
        await client.post("/v1/messages", json=message_request())
    text = await gateway.metrics()
    spender = 'cost_center="platform",developer="alice",model="claude-opus-5-5"'
    cost = Decimal(gateway.ledger()[0]["costUSD"])
    assert f"spendgate_cost_usd_total{{{spender}}} {float(cost)}" in text
    for kind, count in (("input", 50), ("cache_write_5m", 1500), ("cache_write_1h", 2500), ("cache_read", 120000),
                        ("output", 30)):
        assert f'spendgate_tokens_total{{{spender},type="{kind}"}} {float(count)}' in text
    assert f'spendgate_requests_total{{{spender},status="200"}} 1.0' in text
    assert f'spendgate_requests_total{{{spender},status="529"}} 1.0' in text
    assert 'spendgate_upstream_latency_seconds_count{endpoint="messages"} 2.0' in text
    assert 'spendgate_added_latency_seconds_count{endpoint="messages"} 2.0' in text
    assert f'spendgate_bundle_info{{version="{gateway.proxy.bundles.current.version}"}} 1.0' in text
    assert "process_resident_memory_bytes" in text


async def test_labels_stay_bounded(gateway: Running, keys: Keys) -> None:
    """Made-up model ids become `unknown`; sessions, request ids and repos never become labels."""
    async with gateway.client(keys.bob, **{"x-claude-code-session-id": "session-1234", "x-spendgate-repo": "org/r"}
                              ) as client:
        for model in ("made-up-1", "made-up-2"):
            await client.post("/v1/messages", json=message_request(model=model))
    text = await gateway.metrics()
    assert 'model="unknown",status="200"} 2.0' in text
    assert 'spendgate_request_flags_total{flag="unknown_model"} 2.0' in text
    for value in ("made-up", "session-1234", "org/r", gateway.ledger()[-1]["requestId"]):
        assert value not in text


async def test_standalone_policies_reload_when_they_change(gateway: Running, keys: Keys, policies: Path) -> None:
    carol = create_key(keys.file, name="carol-laptop", developer="carol", cost_center="platform")
    assert await status_once_reloaded(gateway, carol) == 200
    good = gateway.proxy.bundles.current.version

    (policies / "40-broken.yaml").write_text("apiVersion: spendgate.io/v1alpha1\nkind: Budget\nmetadata: {name: x}\n"
                                             "spec: {costCenter: nowhere}\n")
    await until(lambda: gateway.proxy.bundles.last_error is not None)
    assert gateway.proxy.bundles.current.version == good  # the last good bundle stays in force
    async with gateway.client(carol) as client:
        assert (await client.post("/v1/messages", json=message_request())).status_code == 200
    detail = (await admin_get(gateway, "/readyz")).json()
    assert detail["ready"] is True and "policy errors" in detail["lastLoadError"]
    text = await gateway.metrics()
    assert "spendgate_bundle_load_errors_total 1.0" in text
    assert "spendgate_bundle_last_load_success 0.0" in text

    (policies / "40-broken.yaml").unlink()
    await until(lambda: gateway.proxy.bundles.last_error is None)
    assert "spendgate_bundle_last_load_success 1.0" in await gateway.metrics()


def configmap_volume(root: Path, name: str, bundle: bytes) -> None:
    """What the kubelet does to a ConfigMap volume: a new timestamped dir, then an atomic ..data swap."""
    version = root / f"..{name}"
    version.mkdir()
    (version / "bundle.json").write_bytes(bundle)
    (root / "..data_tmp").symlink_to(version.name)
    os.replace(root / "..data_tmp", root / "..data")
    if not (root / "bundle.json").is_symlink():
        (root / "bundle.json").symlink_to("..data/bundle.json")


async def test_cluster_bundle_reloads_on_configmap_swap(start_gateway: StartGateway, policies: Path, keys: Keys,
                                                        tmp_path: Path) -> None:
    volume = tmp_path / "configmap"
    volume.mkdir()
    configmap_volume(volume, "2026_11_24_01", dumps(compile_directory(policies, keys.file).bundle))
    gateway = await start_gateway(source=BundleFile(volume / "bundle.json"))
    dave = create_key(keys.file, name="dave-laptop", developer="dave", cost_center="engineering")
    async with gateway.client(dave) as client:
        assert (await client.post("/v1/messages", json=message_request())).status_code == 401

    configmap_volume(volume, "2026_11_24_02", dumps(compile_directory(policies, keys.file).bundle))
    assert await status_once_reloaded(gateway, dave) == 200

    tampered = orjson.loads(dumps(compile_directory(policies, keys.file).bundle))
    tampered["bundle"]["keys"] = []  # content no longer matches its hash
    configmap_volume(volume, "2026_11_24_03", orjson.dumps(tampered))
    await until(lambda: gateway.proxy.bundles.last_error is not None)
    assert "does not match its content" in (gateway.proxy.bundles.last_error or "")
    async with gateway.client(dave) as client:
        assert (await client.post("/v1/messages", json=message_request())).status_code == 200


async def status_once_reloaded(gateway: Running, key: str) -> int:
    version = gateway.proxy.bundles.current.version
    await until(lambda: gateway.proxy.bundles.current.version != version)
    async with gateway.client(key) as client:
        return (await client.post("/v1/messages", json=message_request())).status_code


async def until(condition: object) -> None:
    assert callable(condition)
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


async def test_every_ledger_line_has_the_documented_schema(gateway: Running, keys: Keys) -> None:
    async with gateway.client(keys.alice) as client:
        await client.post("/v1/messages", json=message_request(stream=True))
        await client.get("/v1/models")
    async with gateway.client("sk-sg-wrong") as client:
        await client.post("/v1/messages", json=message_request())
    assert set(LINE_FIELDS) == documented_fields()
    for line in gateway.ledger():
        assert list(line) == list(LINE_FIELDS)
        assert line["schemaVersion"] == SCHEMA_VERSION
        assert line["time"].endswith("Z")
        assert isinstance(line["costUSD"], str)


async def test_ledger_file_rotates_by_size(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    writer = LedgerWriter(str(path), max_bytes=1000, backups=2)
    for number in range(60):
        writer.write({"n": number, "pad": "x" * 80})
        writer.flush()
    writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.jsonl", "ledger.jsonl.1", "ledger.jsonl.2"]
    numbers = [orjson.loads(line)["n"] for name in ("ledger.jsonl.2", "ledger.jsonl.1", "ledger.jsonl")
               for line in (tmp_path / name).read_bytes().splitlines()]
    assert numbers == list(range(numbers[0], 60))  # the newest lines, in order, none lost within the backups
    assert all((tmp_path / name).stat().st_size <= 1100 for name in ("ledger.jsonl.1", "ledger.jsonl.2"))


async def test_ledger_to_stdout_in_batches(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    writer = LedgerWriter("-", max_bytes=1, backups=1)
    writer.write({"a": 1})
    writer.write({"b": 2})
    assert capsysbinary.readouterr().out == b""  # not one write per line...
    for _ in range(500):
        await asyncio.sleep(0.01)
        written = capsysbinary.readouterr().out
        if written:
            break
    assert written == b'{"a":1}\n{"b":2}\n'  # ... but soon, together


async def test_secrets_never_reach_logs_metrics_ledger_or_errors(
        start_gateway: StartGateway, keys: Keys, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    gateway = await start_gateway()
    unreachable = await start_gateway(upstream_url="http://127.0.0.1:9")
    seen = []
    for running, key, headers in ((gateway, keys.alice, {}), (gateway, keys.alice, {"x-mock-scenario": "reset"}),
                                  (gateway, keys.revoked, {}), (unreachable, keys.bob, {})):
        async with running.client(key, **headers) as client:
            response = await client.post("/v1/messages", json=message_request(stream=True))
            seen.append(response.text + str(response.headers))
    everything = "\n".join([*seen, caplog.text, repr(gateway.proxy.settings), await gateway.metrics(),
                            await unreachable.metrics(), gateway.ledger_path.read_text(),
                            unreachable.ledger_path.read_text()])
    for secret in (UPSTREAM_KEY, keys.alice, keys.bob, keys.revoked):
        assert secret not in everything
    assert "unreachable" in everything and "revoked" in everything  # the errors were there to be checked
