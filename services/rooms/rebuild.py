"""The read model rebuilt from the event log alone, into a scratch schema, and compared with the
live one: the proof that the projection is its only writer.

The rebuild folds every event the read-model consumer takes, oldest first, with the same
``projection.apply``, each event id once (as the consumer's inbox does), into empty copies of the
live tables; the store's unqualified SQL reaches the copies through the connection's
``search_path``. Rows compare on every column but ``updated_at`` (a write time, not state).
"""

from __future__ import annotations

import re
import time

import asyncpg
import msgspec

from services.rooms import store
from services.rooms.projection import READ_MODEL, apply
from shared.bus import Bus
from shared.events import CODEC, EventDecodeError
from shared.replay import read_stream

# Events folded per transaction: big enough to be fast, small enough to hold few row locks.
_BATCH = 500
_SCHEMA = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class RebuildResult(msgspec.Struct, kw_only=True):
    schema: str
    events: int = 0
    applied: int = 0
    duplicates: int = 0
    undecodable: int = 0
    read_until: int = 0
    seconds: float = 0.0


class TableDifference(msgspec.Struct, kw_only=True):
    """Keys of rows that differ: only as the live table has them, only as the rebuilt one."""

    table: str
    live_only: list[str]
    rebuilt_only: list[str]


def _checked(schema: str) -> str:
    if not _SCHEMA.match(schema):
        raise ValueError(f"not a plain schema name: {schema!r}")
    return schema


async def rebuild_into(conn: asyncpg.Connection, bus: Bus, schema: str) -> RebuildResult:
    """Create ``schema`` with empty copies of the read model's tables and fold the whole log
    into them. ``conn`` is left with its ``search_path`` set to ``schema``."""
    started = time.monotonic()
    live = await conn.fetchval("SELECT current_schema()")
    scratch = _checked(schema)
    await conn.execute(f"CREATE SCHEMA {scratch}")
    for table, _ in store.TABLES.values():
        await conn.execute(f"CREATE TABLE {scratch}.{table} (LIKE {live}.{table} INCLUDING ALL)")
    await conn.execute(f"SET search_path TO {scratch}")
    result = RebuildResult(schema=scratch)
    seen: set[str] = set()
    transaction = conn.transaction()
    await transaction.start()

    async def fold(sequence: int, payload: bytes) -> None:
        nonlocal transaction
        result.events += 1
        try:
            event = CODEC.decode(payload)
        except EventDecodeError:
            result.undecodable += 1  # the live consumer dead-letters it: applied by neither
            return
        if event.id in seen:
            result.duplicates += 1
            return
        seen.add(event.id)
        await apply(conn, event)
        result.applied += 1
        if result.applied % _BATCH == 0:
            await transaction.commit()
            transaction = conn.transaction()
            await transaction.start()

    try:
        result.read_until = await read_stream(bus, READ_MODEL.events, fold)
    except BaseException:
        await transaction.rollback()
        raise
    await transaction.commit()
    result.seconds = time.monotonic() - started
    return result


async def differences(
    conn: asyncpg.Connection, schema: str, live: str = "public", limit: int = 20
) -> list[TableDifference]:
    """The tables whose rows differ between the live schema and the rebuilt ``schema``."""
    scratch = _checked(schema)
    found = []
    for kind, (table, key) in store.TABLES.items():
        columns = ", ".join(store.column_names(kind))
        live_only, rebuilt_only = [
            [
                r[0]
                for r in await conn.fetch(
                    f"SELECT {key} FROM (SELECT {columns} FROM {a}.{table}"  # noqa: S608 - constants
                    f" EXCEPT SELECT {columns} FROM {b}.{table}) d ORDER BY 1 LIMIT {limit}"
                )
            ]
            for a, b in ((live, scratch), (scratch, live))
        ]
        if live_only or rebuilt_only:
            found.append(
                TableDifference(table=table, live_only=live_only, rebuilt_only=rebuilt_only)
            )
    return found


async def drop(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(f"DROP SCHEMA IF EXISTS {_checked(schema)} CASCADE")
