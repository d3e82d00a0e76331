"""The key service's SQL: wrapped data keys and the live dispatches of agent jobs."""

from __future__ import annotations

from datetime import datetime
from typing import TypeAlias

import asyncpg

from shared.db import Connection

Queryable: TypeAlias = "Connection | asyncpg.Pool"


async def live_key(
    conn: Queryable, tenant: str, patient_ref: str, purpose: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM data_keys WHERE tenant_id = $1 AND patient_ref = $2 AND purpose = $3"
        " AND destroyed_at IS NULL",
        tenant,
        patient_ref,
        purpose,
    )


async def insert_key(
    conn: Queryable,
    *,
    key_id: str,
    tenant: str,
    patient_ref: str,
    purpose: str,
    kek_id: str,
    wrapped: bytes,
) -> None:
    """Insert a new live key, unless another request made one first (then nothing happens)."""
    await conn.execute(
        "INSERT INTO data_keys (key_id, tenant_id, patient_ref, purpose, kek_id, wrapped)"
        " VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (tenant_id, patient_ref, purpose) WHERE destroyed_at IS NULL DO NOTHING",
        key_id,
        tenant,
        patient_ref,
        purpose,
        kek_id,
        wrapped,
    )


async def touch(conn: Queryable, key_id: str) -> None:
    await conn.execute(
        "UPDATE data_keys SET last_sealed_at = now() WHERE key_id = $1"
        " AND last_sealed_at < now() - interval '1 minute'",
        key_id,
    )


async def key_by_id(conn: Queryable, tenant: str, key_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM data_keys WHERE key_id = $1 AND tenant_id = $2 AND destroyed_at IS NULL",
        key_id,
        tenant,
    )


async def destroy(
    conn: Queryable, tenant: str, patient_ref: str, purpose: str, reason: str
) -> list[str]:
    """Null the wrapped bytes of the live key of (tenant, patient, purpose); its id, if any."""
    rows = await conn.fetch(
        "UPDATE data_keys SET wrapped = NULL, destroyed_at = now(), destroy_reason = $4"
        " WHERE tenant_id = $1 AND patient_ref = $2 AND purpose = $3 AND destroyed_at IS NULL"
        " RETURNING key_id",
        tenant,
        patient_ref,
        purpose,
        reason,
    )
    return [row["key_id"] for row in rows]


async def clinical_unused_since(conn: Queryable, before: datetime) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT tenant_id, patient_ref FROM data_keys WHERE purpose = 'clinical'"
        " AND destroyed_at IS NULL AND last_sealed_at < $1 LIMIT 500",
        before,
    )


async def wrapped_by_other(conn: Queryable, kek_id: str, limit: int) -> list[asyncpg.Record]:
    """Live keys wrapped by another KEK than ``kek_id`` (the rotation's to-do list)."""
    return await conn.fetch(
        "SELECT * FROM data_keys WHERE kek_id <> $1 AND destroyed_at IS NULL"
        " ORDER BY key_id LIMIT $2",
        kek_id,
        limit,
    )


async def rewrap(conn: Queryable, key_id: str, old_kek: str, new_kek: str, wrapped: bytes) -> None:
    await conn.execute(
        "UPDATE data_keys SET kek_id = $3, wrapped = $4"
        " WHERE key_id = $1 AND kek_id = $2 AND destroyed_at IS NULL",
        key_id,
        old_kek,
        new_kek,
        wrapped,
    )


async def keys_per_kek(conn: Queryable) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT kek_id, count(*) AS n FROM data_keys WHERE destroyed_at IS NULL GROUP BY kek_id"
    )
    return {row["kek_id"]: row["n"] for row in rows}


async def counts(conn: Queryable) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT purpose || CASE WHEN destroyed_at IS NULL THEN '' ELSE ' (destroyed)' END AS what,"
        " count(*) AS n FROM data_keys GROUP BY 1 ORDER BY 1"
    )
    return {row["what"]: row["n"] for row in rows}


# -- dispatches ----------------------------------------------------------------------------


async def dispatch_requested(
    conn: Queryable, dispatch_id: str, tenant: str, patient_ref: str, at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO key_dispatches (dispatch_id, tenant_id, patient_ref, requested_at)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT (dispatch_id) DO UPDATE SET"
        " patient_ref = excluded.patient_ref, requested_at = excluded.requested_at",
        dispatch_id,
        tenant,
        patient_ref,
        at,
    )


async def dispatch_ended(conn: Queryable, dispatch_id: str, tenant: str, at: datetime) -> None:
    """Ended for good: a later (or redelivered) request never makes it live again."""
    await conn.execute(
        "INSERT INTO key_dispatches (dispatch_id, tenant_id, ended_at) VALUES ($1, $2, $3)"
        " ON CONFLICT (dispatch_id) DO UPDATE SET"
        " ended_at = coalesce(key_dispatches.ended_at, excluded.ended_at)",
        dispatch_id,
        tenant,
        at,
    )


async def live_dispatch(conn: Queryable, dispatch_id: str, tenant: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM key_dispatches WHERE dispatch_id = $1 AND tenant_id = $2"
        " AND requested_at IS NOT NULL AND ended_at IS NULL",
        dispatch_id,
        tenant,
    )
