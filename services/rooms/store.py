"""The read model's SQL: load rows under a per-key lock, save them, and the views' queries."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypeAlias, TypeVar

import asyncpg

from services.rooms.core import ParticipantRow, RoomRow
from services.rooms.media_core import EgressRow, IngressRow
from services.rooms.track_core import TrackRow
from shared.db import Connection

Row = TypeVar("Row", RoomRow, ParticipantRow, TrackRow, EgressRow, IngressRow)
AnyRow: TypeAlias = RoomRow | ParticipantRow | TrackRow | EgressRow | IngressRow
Queryable: TypeAlias = "Connection | asyncpg.Pool"

# table, key column, row type; columns are the row type's fields (updated_at is the store's).
TABLES: dict[type[Any], tuple[str, str]] = {
    RoomRow: ("room_instances", "sid"),
    ParticipantRow: ("room_participants", "sid"),
    TrackRow: ("room_tracks", "sid"),
    EgressRow: ("room_egress", "egress_id"),
    IngressRow: ("room_ingress", "ingress_id"),
}


def column_names(kind: type[Any]) -> list[str]:
    return [f for f in kind.__struct_fields__ if f != "updated_at"]


def _row(kind: type[Row], record: asyncpg.Record | None) -> Row | None:
    if record is None:
        return None
    fields = set(kind.__struct_fields__)
    return kind(**{k: v for k, v in record.items() if k in fields})


async def lock(conn: Connection, kind: type[Any], key: str) -> None:
    """Serialise writers of one row for this transaction, including a row not there yet (two
    first events about it must not both insert)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"{TABLES[kind][0]}:{key}")


async def load(conn: Connection, kind: type[Row], key: str) -> Row | None:
    """The row of ``key``, locked for the rest of the transaction (None if absent)."""
    await lock(conn, kind, key)
    table, column = TABLES[kind]
    record = await conn.fetchrow(f"SELECT * FROM {table} WHERE {column} = $1", key)  # noqa: S608 - names are constants
    return _row(kind, record)


async def save(conn: Connection, row: AnyRow) -> None:
    table, key = TABLES[type(row)]
    columns = column_names(type(row))
    values = [getattr(row, c) for c in columns]
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != key)
    await conn.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) "  # noqa: S608 - names are constants
        f"VALUES ({', '.join(f'${i}' for i in range(1, len(columns) + 1))}) "
        f"ON CONFLICT ({key}) DO UPDATE SET {updates}, updated_at = now()",
        *values,
    )


async def change(conn: Connection, before: Row | None, after: Row) -> bool:
    """Save ``after`` if the rules changed anything (they keep ``updated_at`` as loaded)."""
    if before is not None and after == before:
        return False
    await save(conn, after)
    return True


# --- views ------------------------------------------------------------------------------------


async def open_room(conn: Queryable, tenant: str, name: str) -> RoomRow | None:
    """The newest unfinished instance of a tenant's room."""
    record = await conn.fetchrow(
        "SELECT * FROM room_instances WHERE tenant = $1 AND name = $2 AND finished_at IS NULL"
        " ORDER BY created_at DESC NULLS LAST LIMIT 1",
        tenant,
        name,
    )
    return _row(RoomRow, record)


async def open_rooms(pool: asyncpg.Pool, tenant: str) -> list[tuple[RoomRow, int]]:
    """A tenant's open rooms (the newest instance of each name) with how many are present."""
    records = await pool.fetch(
        "SELECT DISTINCT ON (r.name) r.*, (SELECT count(*) FROM room_participants p"
        "  WHERE p.room_sid = r.sid AND p.left_at IS NULL) AS present"
        " FROM room_instances r WHERE r.tenant = $1 AND r.finished_at IS NULL"
        " ORDER BY r.name, r.created_at DESC NULLS LAST",
        tenant,
    )
    return [(_row(RoomRow, r), r["present"]) for r in records]  # type: ignore[misc]


async def count_present(pool: asyncpg.Pool, room_sid: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM room_participants WHERE room_sid = $1 AND left_at IS NULL", room_sid
    )
    return count


async def present_participants(
    pool: asyncpg.Pool, room_sid: str, identity: str | None = None
) -> list[tuple[ParticipantRow, list[TrackRow]]]:
    """Who is in a room instance now (optionally one identity), each with published tracks."""
    records = await pool.fetch(
        "SELECT * FROM room_participants WHERE room_sid = $1 AND left_at IS NULL"
        " AND ($2::text IS NULL OR identity = $2) ORDER BY joined_at NULLS LAST, identity",
        room_sid,
        identity,
    )
    participants = [_row(ParticipantRow, r) for r in records]
    tracks = await pool.fetch(
        "SELECT * FROM room_tracks WHERE participant_sid = ANY($1::text[])"
        " AND unpublished_at IS NULL ORDER BY published_at NULLS LAST, sid",
        [p.sid for p in participants if p],
    )
    by_participant: dict[str, list[TrackRow]] = {}
    for record in tracks:
        track = _row(TrackRow, record)
        assert track is not None
        by_participant.setdefault(track.participant_sid, []).append(track)
    return [(p, by_participant.get(p.sid, [])) for p in participants if p]


async def egresses(
    pool: asyncpg.Pool,
    tenant: str,
    room: str | None = None,
    active: bool | None = None,
    dispatch_id: str | None = None,
) -> list[EgressRow]:
    records = await pool.fetch(
        "SELECT * FROM room_egress WHERE tenant = $1 AND ($2::text IS NULL OR room = $2)"
        " AND ($3::boolean IS NULL OR (ended_at IS NULL AND status NOT IN"
        "  ('complete', 'failed', 'aborted', 'limit_reached')) = $3)"
        " AND ($4::text IS NULL OR dispatch_id = $4)"
        " ORDER BY coalesce(requested_at, started_at) DESC NULLS LAST LIMIT 500",
        tenant,
        room,
        active,
        dispatch_id,
    )
    return [r for r in (_row(EgressRow, x) for x in records) if r]


async def ingresses(pool: asyncpg.Pool, tenant: str, room: str | None = None) -> list[IngressRow]:
    records = await pool.fetch(
        "SELECT * FROM room_ingress WHERE tenant = $1 AND deleted_at IS NULL"
        " AND ($2::text IS NULL OR room = $2) ORDER BY created_at DESC NULLS LAST LIMIT 500",
        tenant,
        room,
    )
    return [r for r in (_row(IngressRow, x) for x in records) if r]


async def tenant_row(conn: Queryable, kind: type[Row], tenant: str, key: str) -> Row | None:
    """A row of one tenant by key (None for another tenant's: it does not exist for them)."""
    table, column = TABLES[kind]
    record = await conn.fetchrow(
        f"SELECT * FROM {table} WHERE {column} = $1 AND tenant = $2",  # noqa: S608 - constants
        key,
        tenant,
    )
    return _row(kind, record)


# --- reconciliation ---------------------------------------------------------------------------


async def snapshot(
    pool: asyncpg.Pool,
    live_rooms: Iterable[str],
    live_participants: Iterable[str],
    live_tracks: Iterable[str],
) -> tuple[list[RoomRow], list[ParticipantRow], list[TrackRow]]:
    """The rows the reconciliation compares with LiveKit's listing: open rooms, present
    participants, published tracks, the rows of what LiveKit lists, and the tracks' owners."""
    rooms = await pool.fetch(
        "SELECT * FROM room_instances WHERE finished_at IS NULL OR sid = ANY($1::text[])",
        list(live_rooms),
    )
    tracks = await pool.fetch(
        "SELECT * FROM room_tracks WHERE unpublished_at IS NULL OR sid = ANY($1::text[])",
        list(live_tracks),
    )
    participants = await pool.fetch(
        "SELECT * FROM room_participants WHERE left_at IS NULL OR sid = ANY($1::text[])"
        " OR sid = ANY($2::text[])",
        list(live_participants),
        [t["participant_sid"] for t in tracks],
    )
    return (
        [r for r in (_row(RoomRow, x) for x in rooms) if r],
        [p for p in (_row(ParticipantRow, x) for x in participants) if p],
        [t for t in (_row(TrackRow, x) for x in tracks) if t],
    )


async def sightings(pool: asyncpg.Pool, sids: list[str]) -> dict[str, datetime]:
    """When the reconciliation last saw these sids in LiveKit's listing (if it did)."""
    records = await pool.fetch(
        "SELECT sid, seen_at FROM room_sightings WHERE sid = ANY($1::text[])", sids
    )
    return {r["sid"]: r["seen_at"] for r in records}


async def record_sightings(conn: Connection, sids: list[str], seen_at: datetime) -> None:
    """Remember that LiveKit listed ``sids`` at ``seen_at``; forget sightings a day old (what
    they were for was decided long since)."""
    await conn.execute(
        "INSERT INTO room_sightings (sid, seen_at) SELECT unnest($1::text[]), $2"
        " ON CONFLICT (sid) DO UPDATE SET seen_at = greatest(room_sightings.seen_at,"
        " excluded.seen_at)",
        sids,
        seen_at,
    )
    await conn.execute(
        "DELETE FROM room_sightings WHERE seen_at < $1::timestamptz - interval '1 day'", seen_at
    )


async def published(conn: Connection, event_ids: list[str]) -> set[str]:
    """Which of these event ids are already in the outbox (a finding made before)."""
    records = await conn.fetch(
        "SELECT event_id FROM outbox WHERE event_id = ANY($1::text[])", event_ids
    )
    return {r["event_id"] for r in records}
