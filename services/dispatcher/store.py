"""The dispatcher's SQL: the ``agent_dispatches`` read model, one row per dispatch, and
``dispatch_usage_limits``, billing's usage caps as the dispatcher needs them."""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec

from services.dispatcher.core import DispatchState, UsageLimit
from shared.db import Connection

_COLUMNS = tuple(DispatchState.__struct_fields__)


def _state(row: asyncpg.Record) -> DispatchState:
    return msgspec.convert({c: row[c] for c in _COLUMNS}, DispatchState)


async def load(conn: Connection | asyncpg.Pool, dispatch_id: str) -> DispatchState | None:
    row = await conn.fetchrow("SELECT * FROM agent_dispatches WHERE dispatch_id = $1", dispatch_id)
    return _state(row) if row else None


async def save(conn: Connection, state: DispatchState) -> None:
    values = [getattr(state, c) for c in _COLUMNS]
    placeholders = ", ".join(f"${i}" for i in range(1, len(_COLUMNS) + 1))
    updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "dispatch_id")
    await conn.execute(
        f"INSERT INTO agent_dispatches ({', '.join(_COLUMNS)}) VALUES ({placeholders})"  # noqa: S608 - column names are ours
        f" ON CONFLICT (dispatch_id) DO UPDATE SET {updates}, updated_at = now()",
        *values,
    )


async def for_tenant(pool: asyncpg.Pool, tenant_id: str, dispatch_id: str) -> DispatchState | None:
    row = await pool.fetchrow(
        "SELECT * FROM agent_dispatches WHERE dispatch_id = $1 AND tenant_id = $2",
        dispatch_id,
        tenant_id,
    )
    return _state(row) if row else None


async def list_for_tenant(
    pool: asyncpg.Pool, tenant_id: str, *, room: str | None, state: str | None, limit: int
) -> list[DispatchState]:
    # A room's list is a statement of its own: with "($2 IS NULL OR room = $2)" a prepared
    # statement's generic plan (what a pooled connection may settle on after five runs) cannot
    # use the room in the index, and reads every dispatch the tenant ever had.
    by_state = "($2::text IS NULL OR state = $2)"
    if room is None:
        rows = await pool.fetch(
            f"SELECT * FROM agent_dispatches WHERE tenant_id = $1 AND {by_state}"  # noqa: S608
            " ORDER BY requested_at DESC LIMIT $3",
            tenant_id,
            state,
            limit,
        )
    else:
        rows = await pool.fetch(
            f"SELECT * FROM agent_dispatches WHERE tenant_id = $1 AND {by_state}"  # noqa: S608
            " AND room = $4 ORDER BY requested_at DESC LIMIT $3",
            tenant_id,
            state,
            limit,
            room,
        )
    return [_state(r) for r in rows]


async def past_deadline(pool: asyncpg.Pool, now: datetime) -> list[DispatchState]:
    rows = await pool.fetch(
        "SELECT * FROM agent_dispatches WHERE state IN ('requested', 'dispatched')"
        " AND deadline_at <= $1 ORDER BY deadline_at LIMIT 100",
        now,
    )
    return [_state(r) for r in rows]


async def ending_too_long(pool: asyncpg.Pool, before: datetime) -> list[DispatchState]:
    """Joined dispatches asked to end before ``before`` that are still running."""
    rows = await pool.fetch(
        "SELECT * FROM agent_dispatches WHERE state = 'joined' AND end_requested_at <= $1"
        " ORDER BY end_requested_at LIMIT 100",
        before,
    )
    return [_state(r) for r in rows]


async def joined_on_worker(pool: asyncpg.Pool, worker_id: str) -> list[DispatchState]:
    rows = await pool.fetch(
        "SELECT * FROM agent_dispatches WHERE state = 'joined' AND worker_id = $1",
        worker_id,
    )
    return [_state(r) for r in rows]


async def park(conn: Connection, dispatch_id: str, stream_sequence: int, event: bytes) -> None:
    await conn.execute(
        "INSERT INTO dispatch_parked_events (dispatch_id, stream_sequence, event)"
        " VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        dispatch_id,
        stream_sequence,
        event,
    )


async def unpark(conn: Connection, dispatch_id: str) -> list[bytes]:
    """The events parked for a dispatch, in stream order, removed from the parking."""
    rows = await conn.fetch(
        "DELETE FROM dispatch_parked_events WHERE dispatch_id = $1 RETURNING stream_sequence, event",
        dispatch_id,
    )
    return [r["event"] for r in sorted(rows, key=lambda r: r["stream_sequence"])]


async def joined_since(pool: asyncpg.Pool, before: datetime) -> list[DispatchState]:
    """Dispatches joined before ``before`` and still running (the lost-agent sweeper's list)."""
    rows = await pool.fetch(
        "SELECT * FROM agent_dispatches WHERE state = 'joined' AND joined_at <= $1"
        " ORDER BY joined_at LIMIT 500",
        before,
    )
    return [_state(r) for r in rows]


_LIMIT_COLUMNS = tuple(UsageLimit.__struct_fields__)


def _limit(row: asyncpg.Record) -> UsageLimit:
    return msgspec.convert({c: row[c] for c in _LIMIT_COLUMNS}, UsageLimit)


async def load_usage_limit(
    conn: Connection, tenant_id: str, meter: str, period_start: datetime
) -> UsageLimit | None:
    row = await conn.fetchrow(
        "SELECT * FROM dispatch_usage_limits"
        " WHERE tenant_id = $1 AND meter = $2 AND period_start = $3",
        tenant_id,
        meter,
        period_start,
    )
    return _limit(row) if row else None


async def save_usage_limit(conn: Connection, limit: UsageLimit) -> None:
    """Insert or replace the row, never with a lower revision: two replicas applying two
    notices of the same cap at once cannot go back in time."""
    values = [getattr(limit, c) for c in _LIMIT_COLUMNS]
    placeholders = ", ".join(f"${i}" for i in range(1, len(_LIMIT_COLUMNS) + 1))
    key = ("tenant_id", "meter", "period_start")
    updates = ", ".join(f"{c} = excluded.{c}" for c in _LIMIT_COLUMNS if c not in key)
    await conn.execute(
        f"INSERT INTO dispatch_usage_limits ({', '.join(_LIMIT_COLUMNS)}) VALUES ({placeholders})"  # noqa: S608 - column names are ours
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}, updated_at = now()"
        " WHERE dispatch_usage_limits.revision < excluded.revision",
        *values,
    )


async def usage_limits_in_force(
    pool: asyncpg.Pool, tenant_id: str, now: datetime
) -> list[UsageLimit]:
    """The tenant's caps in force whose month has not ended (those of past months can never
    refuse again); ``core.blocking_limits`` decides."""
    rows = await pool.fetch(
        "SELECT * FROM dispatch_usage_limits WHERE tenant_id = $1 AND in_force AND period_end > $2",
        tenant_id,
        now,
    )
    return [_limit(r) for r in rows]


async def count_placed(pool: asyncpg.Pool) -> tuple[int, int]:
    """Dispatches of every tenant accepted but not joined yet (no worker counts them yet), and
    those joined and running (their worker's next load report counts them)."""
    row = await pool.fetchrow(
        "SELECT count(*) FILTER (WHERE state IN ('requested', 'dispatched')) AS starting,"
        " count(*) FILTER (WHERE state = 'joined') AS running FROM agent_dispatches"
    )
    assert row is not None
    return int(row["starting"]), int(row["running"])
