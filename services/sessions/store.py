"""The timeline's SQL: writing what an event adds (in the projection's transaction), reading a
session and its entries by cursor."""

from __future__ import annotations

import asyncpg

from services.sessions.core import Dispatch, Fold, state_rank
from shared.db import Connection

# Where the projection says a tenant's timelines changed (payload: the tenant id); the live
# endpoint listens (services/sessions/live.py).
CHANNEL = "mediai_timeline"


async def apply(conn: Connection, tenant: str, fold: Fold) -> None:
    """Write ``fold`` for ``tenant``; order-independent: a field once known is kept, a state
    only moves forward, and an entry completed by a second event keeps what the first said."""
    for room in fold.rooms:
        await conn.execute(
            "INSERT INTO session_rooms (tenant_id, room_sid, room, started_at, finished_at)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id, room_sid) DO UPDATE SET"
            " started_at = coalesce(least(session_rooms.started_at, excluded.started_at),"
            " session_rooms.started_at, excluded.started_at),"
            " finished_at = coalesce(excluded.finished_at, session_rooms.finished_at)",
            tenant,
            room.room_sid,
            room.room,
            room.started_at,
            room.finished_at,
        )
    for dispatch in fold.dispatches:
        await _dispatch(conn, tenant, dispatch)
    for agent in fold.agents:
        await conn.execute(
            "INSERT INTO session_agents (tenant_id, identity, room_sid, room)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            tenant,
            agent.identity,
            agent.room_sid,
            agent.room,
        )
        await conn.execute(
            "UPDATE session_dispatches SET room_sid = $3 WHERE tenant_id = $1"
            " AND agent_identity = $2 AND room = $4 AND room_sid = ''",
            tenant,
            agent.identity,
            agent.room_sid,
            agent.room,
        )
    for entry in fold.entries:
        await conn.execute(
            "INSERT INTO timeline_entries (tenant_id, key, kind, at, room_sid, dispatch_id,"
            " patient_ref, trace_id, data, personal)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            " ON CONFLICT (tenant_id, key) DO UPDATE SET seq = nextval('timeline_seq'),"
            " data = timeline_entries.data || excluded.data,"
            " personal = CASE WHEN excluded.personal IS NULL THEN timeline_entries.personal"
            " ELSE coalesce(timeline_entries.personal, '{}') || excluded.personal END,"
            " at = least(timeline_entries.at, excluded.at),"
            " trace_id = CASE WHEN timeline_entries.trace_id = '' THEN excluded.trace_id"
            " ELSE timeline_entries.trace_id END",
            tenant,
            entry.key,
            entry.kind,
            entry.at,
            entry.room_sid,
            entry.dispatch_id,
            entry.patient_ref,
            entry.trace_id,
            entry.data,
            entry.personal,
        )
    if fold.entries or fold.rooms or fold.dispatches:
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, tenant)


async def _dispatch(conn: Connection, tenant: str, d: Dispatch) -> None:
    await conn.execute(
        "INSERT INTO session_dispatches AS d (tenant_id, dispatch_id, room, role, state,"
        " state_rank,"
        " patient_ref, agent_identity, requested_at, ended_at, room_sid)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, coalesce((SELECT room_sid FROM"
        " session_agents WHERE tenant_id = $1 AND identity = $8 AND room = $3 AND $8 <> ''"
        " LIMIT 1), ''))"
        " ON CONFLICT (tenant_id, dispatch_id) DO UPDATE SET"
        " role = CASE WHEN excluded.role = '' THEN d.role ELSE excluded.role END,"
        " state = CASE WHEN excluded.state_rank > d.state_rank THEN excluded.state"
        " ELSE d.state END,"
        " state_rank = greatest(d.state_rank, excluded.state_rank),"
        " patient_ref = CASE WHEN excluded.patient_ref = '' THEN d.patient_ref"
        " ELSE excluded.patient_ref END,"
        " agent_identity = CASE WHEN excluded.agent_identity = '' THEN d.agent_identity"
        " ELSE excluded.agent_identity END,"
        " room_sid = CASE WHEN d.room_sid = '' THEN excluded.room_sid ELSE d.room_sid END,"
        " requested_at = coalesce(d.requested_at, excluded.requested_at),"
        " ended_at = coalesce(d.ended_at, excluded.ended_at)",
        tenant,
        d.dispatch_id,
        d.room,
        d.role,
        d.state,
        state_rank(d.state),
        d.patient_ref,
        d.agent_identity,
        d.requested_at,
        d.ended_at,
    )


# -- reading ---------------------------------------------------------------------------------


async def room_sessions(
    conn: Connection, tenant: str, *, live: bool | None, limit: int
) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT * FROM session_rooms WHERE tenant_id = $1"
            " AND ($2::boolean IS NULL OR (finished_at IS NULL) = $2)"
            " ORDER BY started_at DESC NULLS LAST, room_sid LIMIT $3",
            tenant,
            live,
            limit,
        )
    )


async def dispatches_of(
    conn: Connection, tenant: str, room_sids: list[str]
) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT * FROM session_dispatches WHERE tenant_id = $1 AND room_sid = ANY($2::text[])"
            " ORDER BY requested_at NULLS LAST",
            tenant,
            room_sids,
        )
    )


async def roomless_dispatches(
    conn: Connection, tenant: str, *, live: bool | None, limit: int
) -> list[asyncpg.Record]:
    """Dispatches whose agent never joined a room session (still requested, or failed)."""
    return list(
        await conn.fetch(
            "SELECT * FROM session_dispatches WHERE tenant_id = $1 AND room_sid = ''"
            " AND ($2::boolean IS NULL OR (state_rank <= 3) = $2)"
            " ORDER BY requested_at DESC NULLS LAST LIMIT $3",
            tenant,
            live,
            limit,
        )
    )


async def room_session(conn: Connection, tenant: str, room_sid: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM session_rooms WHERE tenant_id = $1 AND room_sid = $2", tenant, room_sid
    )
    return row


async def dispatch(conn: Connection, tenant: str, dispatch_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM session_dispatches WHERE tenant_id = $1 AND dispatch_id = $2",
        tenant,
        dispatch_id,
    )
    return row


async def entries(
    conn: Connection,
    tenant: str,
    *,
    room_sid: str,
    dispatch_ids: list[str],
    after: int,
    limit: int,
) -> list[asyncpg.Record]:
    """A session's entries after the cursor ``after``, in the order they were written: the room
    session's own (``room_sid``, "" for none) and its dispatches'.

    The room's entries and each dispatch's are read apart, each by equality on its partial
    index (whose condition is written out), so that every plan reads them in ``seq`` order from
    that index. With one ``… OR dispatch_id = ANY(…)`` condition, a prepared statement's generic
    plan (what a pooled connection may settle on after five runs) walked the tenant's whole
    timeline in ``seq`` order instead: 6 ms to find a page of three among 19,000 entries of other
    consultations."""
    return list(
        await conn.fetch(
            "(SELECT * FROM timeline_entries WHERE tenant_id = $1 AND room_sid = $2"
            "  AND room_sid <> '' AND seq > $4 ORDER BY seq LIMIT $5)"
            " UNION ALL"
            " (SELECT e.* FROM (SELECT DISTINCT unnest($3::text[])) AS d (id), LATERAL ("
            "  SELECT * FROM timeline_entries WHERE tenant_id = $1 AND dispatch_id = d.id"
            "  AND dispatch_id <> '' AND (room_sid <> $2 OR room_sid = '') AND seq > $4"
            "  ORDER BY seq LIMIT $5) AS e)"
            " ORDER BY seq LIMIT $5",
            tenant,
            room_sid,
            dispatch_ids,
            after,
            limit,
        )
    )
