"""Tenants (clinics) and their API keys. Keys are shown once and stored only as a hash."""

from __future__ import annotations

import hashlib
import secrets
import string

import asyncpg
import msgspec

from shared.db import Connection
from shared.events import ApiKeyCreated, TenantCreated
from shared.outbox import add_to_outbox
from shared.viewtokens import Grant

KEY_PREFIX = "mk_"
_TENANT_ALPHABET = string.ascii_lowercase + string.digits
SOURCE = "mediai/platform"


class Tenant(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    # Set when the caller came with a view token rather than an API key: what it may do.
    grant: Grant | None = None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_tenant_id() -> str:
    return "t" + "".join(secrets.choice(_TENANT_ALPHABET) for _ in range(10))


async def create_tenant(conn: Connection, name: str) -> tuple[Tenant, str]:
    """Create a tenant with its first API key; returns the tenant and the key (shown once)."""
    name = name.strip()
    if not name or len(name) > 200:
        raise ValueError("a tenant name is 1-200 characters")
    tenant = Tenant(id=new_tenant_id(), name=name)
    async with conn.transaction():
        await conn.execute("INSERT INTO tenants (id, name) VALUES ($1, $2)", tenant.id, tenant.name)
        await add_to_outbox(
            conn,
            TenantCreated(tenant_id=tenant.id, name=tenant.name),
            source=SOURCE,
            tenant=tenant.id,
            key=tenant.id,
        )
        key = await create_api_key(conn, tenant.id)
    return tenant, key


async def create_api_key(conn: Connection, tenant_id: str) -> str:
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO api_keys (key_hash, key_prefix, tenant_id) VALUES ($1, $2, $3)",
            hash_key(key),
            key[:11],
            tenant_id,
        )
        await add_to_outbox(
            conn, ApiKeyCreated(key_prefix=key[:11]), source=SOURCE, tenant=tenant_id, key=tenant_id
        )
    return key


async def authenticate(pool: asyncpg.Pool, key: str) -> Tenant | None:
    """The tenant owning an active key, or None."""
    if not key.startswith(KEY_PREFIX):
        return None
    row = await pool.fetchrow(
        "SELECT t.id, t.name FROM api_keys k JOIN tenants t ON t.id = k.tenant_id"
        " WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        hash_key(key),
    )
    return Tenant(id=row["id"], name=row["name"]) if row else None
