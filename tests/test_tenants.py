"""API keys: looked up once and cached by every service, and revoked everywhere within seconds."""

from __future__ import annotations

import time

import asyncpg
import httpx
import pytest

from deploy.stack import StackState
from shared.bus import Bus
from shared.config import Settings
from shared.events import ApiKeyRevoked
from shared.tenants import ApiKeys, create_tenant, hash_key, shown_prefix
from tests.billing_support import mediai
from tests.support import eventually, watch

ROOM = {"room": "consulta-revogada", "identity": "p-1"}


async def test_a_revoked_key_stops_working_through_the_gateway_within_seconds(
    stack: StackState, settings: Settings, pool: asyncpg.Pool, bus: Bus
) -> None:
    async with pool.acquire() as conn:
        tenant, key = await create_tenant(conn, "Clínica que revoga")
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
    ) as client:
        # The token service now holds the key in its cache.
        assert (await client.post("/v1/tokens", json=ROOM)).status_code == 201
        assert (await client.post("/v1/tokens", json=ROOM)).status_code == 201

        async with watch(bus, ApiKeyRevoked, tenant=tenant.id) as revocations:
            code, out, err = await mediai(settings, "tenants", "revoke-key", shown_prefix(key))
            revoked_at = time.monotonic()
            assert code == 0, err
            assert f"API key {shown_prefix(key)}… of tenant {tenant.id} revoked" in out
            event = await revocations.next(timeout=10)
        assert isinstance(event.data, ApiKeyRevoked)
        assert event.data.key_prefix == shown_prefix(key)
        assert key not in str(event)  # only the prefix is on the record

        async def refused() -> bool:
            answer = await client.post("/v1/tokens", json=ROOM)
            assert answer.status_code in (201, 401), answer.text
            return answer.status_code == 401

        await eventually(refused, timeout=5)
        assert time.monotonic() - revoked_at < 5
        answer = await client.post("/v1/tokens", json=ROOM)
        assert answer.json()["error"]["code"] == "unauthorized"

    # Revoked once: naming it again is one clear line, not a traceback.
    code, out, err = await mediai(settings, "tenants", "revoke-key", shown_prefix(key))
    assert code == 2
    assert err.strip().splitlines() == [f"mediai: no active API key {shown_prefix(key)}…"]


@pytest.mark.parametrize("name", ["mk_short", "not-a-key", ""])
async def test_revoke_key_names_a_key_by_its_prefix_or_whole(
    stack: StackState, settings: Settings, name: str
) -> None:
    code, _, err = await mediai(settings, "tenants", "revoke-key", name)
    assert code == 2
    assert err.strip().splitlines() == [
        "mediai: name a key by its first 11 characters (mk_ and 8) or whole"
    ]


async def test_the_cache_answers_without_postgres_and_forgets_a_revoked_key(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        tenant, key = await create_tenant(conn, "Clínica em cache")
    keys = ApiKeys(pool, ttl=60, size=100)
    assert await keys.tenant(key) == tenant
    # Revoked in the table without its event: the cache still answers (no query per request)...
    await pool.execute("UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1", hash_key(key))
    assert await keys.tenant(key) == tenant
    # ...until the revocation of that key (another tenant's key of the same prefix stays).
    keys.revoked("another-tenant", shown_prefix(key))
    assert await keys.tenant(key) == tenant
    keys.revoked(tenant.id, shown_prefix(key))
    assert await keys.tenant(key) is None
    assert await keys.tenant("mk_unknown-key-of-nobody") is None


async def test_a_cached_key_expires_after_its_ttl(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        tenant, key = await create_tenant(conn, "Clínica com TTL")
    keys = ApiKeys(pool, ttl=0.2, size=100)
    assert await keys.tenant(key) == tenant
    await pool.execute("UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1", hash_key(key))

    async def forgotten() -> bool:
        return await keys.tenant(key) is None

    await eventually(forgotten, timeout=2)
