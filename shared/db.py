"""Postgres through asyncpg: the pool, the migration runner and idempotent projections.

Migrations are numbered SQL files (``0001_tenants.sql``) in ``shared/migrations/`` and in each
service's ``migrations/`` folder; each folder is a component with its own numbering, applied in
order by one runner under an advisory lock, each file in its own transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from shared.config import Settings
from shared.consumer import Delivery

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_ID = 0x6D65646961  # "media": one migration runner at a time across processes


# A connection as code receives it: straight from asyncpg.connect or borrowed from the pool.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


class MigrationError(Exception):
    """A migration file is malformed, or an applied one was changed after it ran."""


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class BoundedPool(asyncpg.Pool):
    """A pool whose every acquire gives up after ``acquire_timeout`` seconds: asyncpg's default
    waits forever, so a frozen database would hang every request instead of failing it."""

    acquire_timeout: float | None = None

    def acquire(self, *, timeout: float | None = None) -> Any:
        return super().acquire(timeout=self.acquire_timeout if timeout is None else timeout)


async def create_pool(
    settings: Settings,
    *,
    min_size: int = 1,
    max_size: int = 10,
    statement_timeout: float | None = -1,
) -> asyncpg.Pool:
    """The process's connection pool; JSON columns come back as Python values.

    Acquiring a connection, connecting and every statement are bounded by the settings (a
    batch job may pass ``statement_timeout=None`` for no statement bound): past them asyncpg
    raises, and ``shared.failures`` reads that as PostgreSQL being unavailable."""
    statement = settings.db_statement_timeout if statement_timeout == -1 else statement_timeout
    server_settings = {}
    if statement is not None:
        # The server's own bound, and the client's (which also fires when the server is frozen
        # and cannot answer at all).
        server_settings["statement_timeout"] = str(int(statement * 1000))
    pool = BoundedPool(
        settings.database_url,
        min_size=min_size,
        max_size=max_size,
        max_queries=50_000,
        max_inactive_connection_lifetime=300.0,
        init=_init_connection,
        loop=None,
        connection_class=asyncpg.Connection,
        record_class=asyncpg.Record,
        timeout=settings.db_acquire_timeout,  # connecting
        command_timeout=statement + 1 if statement is not None else None,
        server_settings=server_settings,
    )
    pool.acquire_timeout = settings.db_acquire_timeout
    await pool
    return pool


# How long a stopping service waits for its connections to come back to the pool: within the
# stop's share of each part (4 s, deploy/supervisor.py) and an orchestrator's grace period.
POOL_CLOSE_SECONDS = 3.0


async def close_pool(pool: asyncpg.Pool, timeout: float = POOL_CLOSE_SECONDS) -> None:
    """Close the pool once its connections are back; past ``timeout``, close them anyway and
    say so (a stop that waited for a held connection until SIGKILL said nothing)."""
    try:
        await asyncio.wait_for(pool.close(), timeout)
    except TimeoutError:
        log.warning(
            "database pool: connections still in use %.0f s after the close began; closed them",
            timeout,
        )
        pool.terminate()


@dataclass(frozen=True)
class Migration:
    component: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover_migrations(root: Path = ROOT) -> list[Migration]:
    """Every migration of ``shared`` and of each service, shared first, then by version."""
    folders = [("shared", root / "shared" / "migrations")] + [
        (folder.parent.name, folder) for folder in sorted(root.glob("services/*/migrations"))
    ]
    found: list[Migration] = []
    for component, folder in folders:
        versions: set[int] = set()
        for path in sorted(folder.glob("*.sql")):
            match = _MIGRATION_NAME.match(path.name)
            if not match:
                raise MigrationError(f"{path}: name must look like 0001_what_it_does.sql")
            version = int(match.group(1))
            if version in versions:
                raise MigrationError(f"{path}: version {version} is used twice in {component}")
            versions.add(version)
            found.append(Migration(component, version, path.stem, path.read_text()))
    return found


async def apply_migrations(conn: asyncpg.Connection, migrations: list[Migration]) -> list[str]:
    """Apply the migrations not yet applied; returns their names. Safe to run concurrently."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        return await _apply_locked(conn, migrations)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)


async def _apply_locked(conn: asyncpg.Connection, migrations: list[Migration]) -> list[str]:
    await conn.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            component text NOT NULL,
            version integer NOT NULL,
            name text NOT NULL,
            checksum text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (component, version)
        )
        """
    )
    applied_now: list[str] = []
    rows = await conn.fetch("SELECT component, version, checksum FROM schema_migrations")
    applied = {(r["component"], r["version"]): r["checksum"] for r in rows}
    for migration in migrations:
        key = (migration.component, migration.version)
        if key in applied:
            if applied[key] != migration.checksum:
                raise MigrationError(
                    f"{migration.component}/{migration.name}: changed after it was applied; "
                    "add a new migration instead"
                )
            continue
        async with conn.transaction():
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (component, version, name, checksum)"
                " VALUES ($1, $2, $3, $4)",
                migration.component,
                migration.version,
                migration.name,
                migration.checksum,
            )
        applied_now.append(f"{migration.component}/{migration.name}")
        log.info("applied migration %s/%s", migration.component, migration.name)
    return applied_now


async def migrate(settings: Settings) -> list[str]:
    """Apply every pending migration to the configured database."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        return await apply_migrations(conn, discover_migrations())
    finally:
        await conn.close()


@asynccontextmanager
async def projection(
    pool: asyncpg.Pool, delivery: Delivery, event_id: str
) -> AsyncIterator[Connection | None]:
    """A transaction for one consumed event, or ``None`` if this consumer already applied it.

    The event id and the stream position are written in the same transaction as the read
    model, so a redelivered or duplicated event changes nothing the second time::

        async with projection(pool, delivery, event.id) as conn:
            if conn is not None:
                await conn.execute(...)
    """
    async with pool.acquire() as conn, conn.transaction():
        first_time = await conn.fetchval(
            "INSERT INTO consumer_inbox (consumer, event_id, stream_sequence)"
            " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING true",
            delivery.consumer,
            event_id,
            delivery.stream_sequence,
        )
        # The position is the consumer's own: applied at the edge, an event may be ahead of
        # the ones before it, and its consumer records it when it gets there. Requests also
        # must not all update the consumer's one row: they would queue on its lock, each
        # holding a pooled connection (32 concurrent dispatches exhausted the pool, 503s).
        if delivery.deliveries > 0:
            await conn.execute(
                "INSERT INTO consumer_positions (consumer, stream_sequence) VALUES ($1, $2)"
                " ON CONFLICT (consumer) DO UPDATE SET stream_sequence ="
                " greatest(consumer_positions.stream_sequence, excluded.stream_sequence),"
                " updated_at = now()",
                delivery.consumer,
                delivery.stream_sequence,
            )
        yield conn if first_time else None
