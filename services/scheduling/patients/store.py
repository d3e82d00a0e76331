"""The SQL of the patients' rights: erasures, what holders erased, the patient event index, the
access log, and the erasure of scheduling's own rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeAlias

import asyncpg
import msgspec

from services.scheduling.patients.core import Erasure, HolderReport
from shared import idempotency_store
from shared.access import Entry
from shared.db import Connection

Queryable: TypeAlias = "Connection | asyncpg.Pool"


def _erasure(row: asyncpg.Record) -> Erasure:
    return Erasure(
        erasure_id=row["erasure_id"],
        tenant=row["tenant_id"],
        patient_ref=row["patient_ref"],
        requested_at=row["requested_at"],
        requested_by=row["requested_by"],
        purpose=row["purpose"],
        destroyed_keys=tuple(row["destroyed_keys"]),
        keys_destroyed_at=row["keys_destroyed_at"],
    )


async def latest_erasure(conn: Queryable, tenant: str, patient_ref: str) -> Erasure | None:
    row = await conn.fetchrow(
        "SELECT * FROM patient_erasures WHERE tenant_id = $1 AND patient_ref = $2"
        " ORDER BY (keys_destroyed_at IS NULL) DESC, requested_at DESC LIMIT 1",
        tenant,
        patient_ref,
    )
    return _erasure(row) if row else None


async def start_erasure(
    conn: Queryable, *, erasure_id: str, tenant: str, patient_ref: str, by: str, purpose: str
) -> Erasure:
    """Record a new erasure, or find the one in progress a concurrent request recorded first."""
    await conn.execute(
        "INSERT INTO patient_erasures (erasure_id, tenant_id, patient_ref, requested_by, purpose)"
        " VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (tenant_id, patient_ref) WHERE keys_destroyed_at IS NULL DO NOTHING",
        erasure_id,
        tenant,
        patient_ref,
        by,
        purpose,
    )
    found = await latest_erasure(conn, tenant, patient_ref)
    assert found is not None
    return found


async def locked_erasure(conn: Connection, erasure_id: str) -> Erasure:
    row = await conn.fetchrow(
        "SELECT * FROM patient_erasures WHERE erasure_id = $1 FOR UPDATE", erasure_id
    )
    assert row is not None
    return _erasure(row)


async def keys_destroyed(
    conn: Connection, erasure_id: str, keys: list[str], at: datetime
) -> Erasure:
    row = await conn.fetchrow(
        "UPDATE patient_erasures SET destroyed_keys = $2, keys_destroyed_at = $3"
        " WHERE erasure_id = $1 RETURNING *",
        erasure_id,
        keys,
        at,
    )
    assert row is not None
    return _erasure(row)


async def in_progress(pool: asyncpg.Pool, older_than: float, limit: int = 100) -> list[Erasure]:
    """Erasures left in progress for ``older_than`` seconds (their process died)."""
    rows = await pool.fetch(
        "SELECT * FROM patient_erasures WHERE keys_destroyed_at IS NULL"
        " AND requested_at < now() - make_interval(secs => $1) ORDER BY requested_at LIMIT $2",
        older_than,
        limit,
    )
    return [_erasure(row) for row in rows]


async def data_since(conn: Queryable, tenant: str, patient_ref: str, since: datetime) -> bool:
    """Whether data about the patient arrived after ``since`` (events, appointments)."""
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM patient_events WHERE tenant_id = $1 AND patient_ref = $2"
        " AND occurred_at > $3) OR EXISTS (SELECT 1 FROM appointments WHERE tenant_id = $1"
        " AND patient_ref = $2 AND updated_at > $3)",
        tenant,
        patient_ref,
        since,
    )
    return found


async def erase_own_rows(conn: Connection, tenant: str, patient_ref: str) -> dict[str, int]:
    """Empty the appointments' personal columns of the patient and delete the answers kept for
    retried requests about them; what was erased, by table.column (only what held data)."""
    counts = await conn.fetchrow(
        "SELECT count(patient_name) AS patient_name, count(patient_contact) AS patient_contact,"
        " count(reason) AS reason, count(cancel_reason) AS cancel_reason FROM appointments"
        " WHERE tenant_id = $1 AND patient_ref = $2",
        tenant,
        patient_ref,
    )
    assert counts is not None
    await conn.execute(
        "UPDATE appointments SET patient_name = NULL, patient_contact = NULL, reason = NULL,"
        " cancel_reason = NULL WHERE tenant_id = $1 AND patient_ref = $2"
        " AND (patient_name IS NOT NULL OR patient_contact IS NOT NULL OR reason IS NOT NULL"
        " OR cancel_reason IS NOT NULL)",
        tenant,
        patient_ref,
    )
    erased = {f"appointments.{column}": n for column, n in counts.items() if n}
    if kept := await idempotency_store.forget_patient(conn, tenant, patient_ref):
        erased["idempotency_keys"] = kept
    return erased


# -- holders' reports -------------------------------------------------------------------------


async def save_report(conn: Connection, erasure_id: str, report: HolderReport) -> None:
    await conn.execute(
        "INSERT INTO patient_erasure_holders (erasure_id, holder, erased, erased_at)"
        " SELECT $1, $2, $3, $4 WHERE EXISTS"
        " (SELECT 1 FROM patient_erasures WHERE erasure_id = $1)"
        " ON CONFLICT (erasure_id, holder) DO NOTHING",
        erasure_id,
        report.holder,
        report.erased,
        report.erased_at,
    )


async def reports(conn: Queryable, erasure_id: str) -> list[HolderReport]:
    rows = await conn.fetch(
        "SELECT holder, erased, erased_at FROM patient_erasure_holders WHERE erasure_id = $1"
        " ORDER BY holder",
        erasure_id,
    )
    return [
        HolderReport(holder=r["holder"], erased=r["erased"], erased_at=r["erased_at"]) for r in rows
    ]


async def erasures_of(conn: Queryable, tenant: str, patient_ref: str) -> list[Erasure]:
    rows = await conn.fetch(
        "SELECT * FROM patient_erasures WHERE tenant_id = $1 AND patient_ref = $2"
        " ORDER BY requested_at",
        tenant,
        patient_ref,
    )
    return [_erasure(row) for row in rows]


# -- the patient event index ------------------------------------------------------------------


async def index_event(
    conn: Queryable,
    *,
    stream: str,
    sequence: int,
    tenant: str,
    patient_ref: str,
    event_type: str,
    at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO patient_events (stream, stream_sequence, tenant_id, patient_ref,"
        " event_type, occurred_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        stream,
        sequence,
        tenant,
        patient_ref,
        event_type,
        at,
    )


async def patient_events(conn: Queryable, tenant: str, patient_ref: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT stream, stream_sequence FROM patient_events WHERE tenant_id = $1"
        " AND patient_ref = $2 ORDER BY occurred_at, stream, stream_sequence",
        tenant,
        patient_ref,
    )


async def patient_anamneses(conn: Queryable, tenant: str, patient_ref: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM anamnesis_records WHERE tenant_id = $1 AND patient_ref = $2"
        " ORDER BY recorded_at, event_id",
        tenant,
        patient_ref,
    )


# -- the access log ---------------------------------------------------------------------------

_ACCESS_LOCK_CLASS = 0x61636365  # "acce": one writer per tenant chain at a time


def _entry(row: asyncpg.Record) -> Entry:
    fields: dict[str, Any] = {name: row[name] for name in Entry.__struct_fields__}
    return msgspec.convert(fields, Entry)


async def chain_head(conn: Connection, tenant: str) -> Entry | None:
    """The newest entry of the tenant's chain, the chain locked until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _ACCESS_LOCK_CLASS, tenant)
    row = await conn.fetchrow(
        "SELECT * FROM access_log WHERE tenant_id = $1 ORDER BY position DESC LIMIT 1", tenant
    )
    return _entry(row) if row else None


async def append_entry(conn: Connection, tenant: str, entry: Entry) -> None:
    values = [getattr(entry, name) for name in Entry.__struct_fields__]
    columns = ", ".join(Entry.__struct_fields__)
    placeholders = ", ".join(f"${i}" for i in range(2, len(values) + 2))
    await conn.execute(
        f"INSERT INTO access_log (tenant_id, {columns}) VALUES ($1, {placeholders})"  # noqa: S608 - our column names
        " ON CONFLICT (event_id) DO NOTHING",
        tenant,
        *values,
    )


async def entries(
    conn: Queryable,
    tenant: str,
    *,
    patient_ref: str | None = None,
    after: int = 0,
    limit: int | None = None,
) -> list[Entry]:
    rows = await conn.fetch(
        "SELECT * FROM access_log WHERE tenant_id = $1 AND ($2::text IS NULL OR patient_ref = $2)"
        " AND position > $3 ORDER BY position LIMIT $4",
        tenant,
        patient_ref,
        after,
        limit,
    )
    return [_entry(row) for row in rows]


async def chained_tenants(conn: Queryable) -> list[str]:
    rows = await conn.fetch("SELECT DISTINCT tenant_id FROM access_log ORDER BY tenant_id")
    return [row["tenant_id"] for row in rows]
