"""A rotated key keeps working through its grace period and stops by itself at `expiresAt`."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from proxy.proxy_harness import Keys, StartGateway, assert_anthropic_error, message_request, wait_for_ledger
from spendgate.adapters.keysfile import rotate_key
from spendgate.policy.bundle import KeyEntry
from spendgate.proxy.attribution import identify, identities
from spendgate.proxy.errors import ProxyError

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_an_expiring_key_is_its_owner_until_the_instant_it_expires() -> None:
    old, new = b"sk-sg-old", b"sk-sg-new"
    current = KeyEntry(hash=hashlib.sha256(new).hexdigest(), name="alice-laptop", developer="alice",
                       costCenter="platform")
    previous = current.model_copy(update={"hash": hashlib.sha256(old).hexdigest(), "expiresAt": "2026-11-24T13:00:00Z"})
    keys = {entry.hash: entry for entry in (current, previous)}
    owners = identities(keys.values())

    assert identify(old, owners, keys, NOW) == identify(new, owners, keys, NOW)
    assert identify(old, owners, keys, NOW + timedelta(minutes=59, seconds=59)).key_name == "alice-laptop"
    with pytest.raises(ProxyError, match="'alice-laptop' was rotated and this key expired at 2026-11-24T13:00:00Z"):
        identify(old, owners, keys, NOW + timedelta(hours=1))
    assert identify(new, owners, keys, NOW + timedelta(days=365)).developer == "alice"


async def test_rotation_on_the_keys_file_reaches_a_running_proxy(start_gateway: StartGateway, keys: Keys) -> None:
    gateway = await start_gateway()
    rotated = rotate_key(keys.file, "alice-laptop", timedelta(hours=1), datetime.now(UTC))
    await gateway.proxy.bundles.reload()

    for key in (keys.alice, rotated):  # both work during the grace period, as the same key name
        async with gateway.client(key) as client:
            assert (await client.post("/v1/messages", json=message_request())).status_code == 200
    assert [line["keyName"] for line in await wait_for_ledger(gateway, 2)] == ["alice-laptop", "alice-laptop"]

    newest = rotate_key(keys.file, "alice-laptop", timedelta(0), datetime.now(UTC))
    await gateway.proxy.bundles.reload()
    async with gateway.client(rotated) as client:
        message = assert_anthropic_error(await client.post("/v1/messages", json=message_request()), 401,
                                         "authentication_error")
    assert "was rotated and this key expired" in message and rotated not in message
    async with gateway.client(newest) as client:
        assert (await client.post("/v1/messages", json=message_request())).status_code == 200
