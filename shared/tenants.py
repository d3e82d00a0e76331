"""Tenants (clinics) and their API keys. Keys are shown once and stored only as a hash.

Services look keys up through ``ApiKeys``: a bounded in-process cache in front of PostgreSQL
(one probe per key and ``api_key_cache_ttl``, not one per request). Revoking a key
(``revoke_api_key``) publishes ``ApiKeyRevoked`` through the outbox; every service subscribes
to it and drops the key at once, so a revoked key stops working within seconds, and the TTL
bounds how long a missed event (NATS away) could keep it working.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import string
from datetime import UTC

import asyncpg
import msgspec
from cachetools import TTLCache
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from shared import subjects
from shared.db import Connection
from shared.events import CODEC, ApiKeyCreated, ApiKeyRevoked, EventDecodeError, TenantCreated
from shared.outbox import add_to_outbox
from shared.viewtokens import Grant

log = logging.getLogger(__name__)

KEY_PREFIX = "mk_"
# How many characters of a key name it in listings, events and ``revoke-key``: "mk_" and 8.
SHOWN_PREFIX_LENGTH = 11
_TENANT_ALPHABET = string.ascii_lowercase + string.digits
SOURCE = "mediai/platform"


class Tenant(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    # Set when the caller came with a view token rather than an API key: what it may do.
    grant: Grant | None = None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def shown_prefix(key: str) -> str:
    return key[:SHOWN_PREFIX_LENGTH]


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
            shown_prefix(key),
            tenant_id,
        )
        await add_to_outbox(
            conn,
            ApiKeyCreated(key_prefix=shown_prefix(key)),
            source=SOURCE,
            tenant=tenant_id,
            key=tenant_id,
        )
    return key


class KeyNotFoundError(ValueError):
    """No active key matches, or the prefix matches more than one key; the message says which."""


async def revoke_api_key(conn: Connection, key_or_prefix: str) -> tuple[str, str]:
    """Revoke one active key, named by the key itself or by its prefix (``mk_AbCdEfGh``, as
    ``ApiKeyCreated`` shows it); returns its tenant and prefix. ``ApiKeyRevoked`` goes to the
    outbox in the same transaction."""
    key_or_prefix = key_or_prefix.strip()
    if not key_or_prefix.startswith(KEY_PREFIX) or len(key_or_prefix) < SHOWN_PREFIX_LENGTH:
        raise KeyNotFoundError(
            f"name a key by its first {SHOWN_PREFIX_LENGTH} characters (mk_ and 8) or whole"
        )
    whole = len(key_or_prefix) > SHOWN_PREFIX_LENGTH
    async with conn.transaction():
        rows = await conn.fetch(
            "SELECT key_hash, key_prefix, tenant_id FROM api_keys"
            " WHERE revoked_at IS NULL AND (key_hash = $1 OR (NOT $2 AND key_prefix = $3))"
            " FOR UPDATE",
            hash_key(key_or_prefix),
            whole,
            key_or_prefix,
        )
        if not rows:
            raise KeyNotFoundError(f"no active API key {shown_prefix(key_or_prefix)}…")
        if len(rows) > 1:
            raise KeyNotFoundError(
                f"{len(rows)} active keys start with {key_or_prefix}; give the whole key"
            )
        row = rows[0]
        revoked_at = await conn.fetchval(
            "UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1 RETURNING revoked_at",
            row["key_hash"],
        )
        await add_to_outbox(
            conn,
            ApiKeyRevoked(key_prefix=row["key_prefix"], revoked_at=revoked_at.astimezone(UTC)),
            source=SOURCE,
            tenant=row["tenant_id"],
            key=row["tenant_id"],
        )
    return row["tenant_id"], row["key_prefix"]


async def authenticate(pool: asyncpg.Pool, key: str) -> Tenant | None:
    """The tenant owning an active key, or None (always asks PostgreSQL; see ``ApiKeys``)."""
    if not key.startswith(KEY_PREFIX):
        return None
    row = await pool.fetchrow(
        "SELECT t.id, t.name FROM api_keys k JOIN tenants t ON t.id = k.tenant_id"
        " WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        hash_key(key),
    )
    return Tenant(id=row["id"], name=row["name"]) if row else None


class ApiKeys:
    """API key -> tenant, cached in process: at most ``size`` keys, each for ``ttl`` seconds.

    Only valid keys are cached (an unknown key asks PostgreSQL each time). ``revoked`` drops a
    key, and ``listen`` calls it for every ``ApiKeyRevoked`` published on the bus.
    """

    def __init__(self, pool: asyncpg.Pool, *, ttl: float, size: int) -> None:
        self.pool = pool
        # sha256 of the key -> (its tenant, its shown prefix)
        self._cache: TTLCache[str, tuple[Tenant, str]] = TTLCache(maxsize=size, ttl=ttl)
        # Bumped by every revocation: a lookup that began before one does not cache its answer
        # (it may have read the key just before it was revoked).
        self._revocations = 0
        self._subscription: Subscription | None = None

    async def tenant(self, key: str) -> Tenant | None:
        digest = hash_key(key)
        cached = self._cache.get(digest)
        if cached is not None:
            return cached[0]
        revocations = self._revocations
        tenant = await authenticate(self.pool, key)
        if tenant is not None and revocations == self._revocations:
            self._cache[digest] = (tenant, shown_prefix(key))
        return tenant

    def revoked(self, tenant: str, key_prefix: str) -> None:
        self._revocations += 1
        for digest, (owner, prefix) in list(self._cache.items()):
            if owner.id == tenant and prefix == key_prefix:
                del self._cache[digest]

    async def listen(self, nc: NatsClient) -> None:
        """Drop keys as their revocations are published (a core NATS subscription: every
        process of every service hears each one)."""
        self._subscription = await nc.subscribe(
            subjects.type_filter(ApiKeyRevoked), cb=self._on_revoked
        )

    async def _on_revoked(self, message: Msg) -> None:
        try:
            event = CODEC.decode(message.data)
        except EventDecodeError:
            log.warning("an undecodable message on the API-key revocation subject; ignored")
            return
        if isinstance(event.data, ApiKeyRevoked):
            self.revoked(event.tenant, event.data.key_prefix)
