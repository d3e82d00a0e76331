"""Replays of the raw stream: reading it, folding it, and writing the rows in bulk.

A replay reads the MEDIAI_EVENTS stream directly (``shared.replay``: every version of every
metered type, optionally one tenant's subjects only) up to the last sequence it had when it
started, decodes with the one codec (old versions come back upcast), and folds the events
with the same metering as the live consumer. Rows go to an unlogged staging table per run and
are summed into their target at the end, so memory stays bounded however long the stream is.
"""

from __future__ import annotations

import asyncio
import secrets
from datetime import datetime

from services.billing.meters import METERED_EVENTS
from services.billing.projector import Projector, Row
from services.billing.store import Connection
from shared.bus import Bus
from shared.events import CODEC, EventCodec, EventDecodeError
from shared.replay import read_stream

FLUSH_ROWS = 200_000
ROW_COLUMNS = [
    "tenant",
    "window_start",
    "meter",
    "room",
    "dispatch",
    "quantity",
    "first_sequence",
    "last_sequence",
]


class Staging:
    """An unlogged table for one run's rows (keys may repeat: they are summed at the end)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.name = f"run_{secrets.token_hex(8)}"
        self.table = f"billing_replay.{self.name}"
        self.rows = 0

    async def __aenter__(self) -> Staging:
        await self.conn.execute(
            f"CREATE UNLOGGED TABLE {self.table} (tenant text, window_start timestamptz,"
            " meter text, room text, dispatch text, quantity bigint, first_sequence bigint,"
            " last_sequence bigint)"
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.execute(f"DROP TABLE IF EXISTS {self.table}")

    async def write(self, rows: list[Row]) -> None:
        if rows:
            await self.conn.copy_records_to_table(
                self.name, schema_name="billing_replay", records=rows, columns=ROW_COLUMNS
            )
            self.rows += len(rows)


async def replay_into(
    bus: Bus,
    projector: Projector,
    staging: Staging,
    *,
    tenant: str | None = None,
    start_time: datetime | None = None,
    codec: EventCodec = CODEC,
) -> int:
    """Fold the stream into ``projector``, flushing its rows to ``staging`` while reading on.
    Returns the last stream sequence the replay covers."""
    writing: asyncio.Task[None] | None = None

    async def handle(sequence: int, payload: bytes) -> None:
        nonlocal writing
        try:
            event = codec.decode(payload)
        except EventDecodeError:
            projector.undecodable(sequence)
            return
        projector.apply(sequence, event)
        if len(projector.rows) >= FLUSH_ROWS:
            if writing is not None:
                await writing
            writing = asyncio.create_task(staging.write(projector.take_rows()))

    try:
        read_until = await read_stream(
            bus, METERED_EVENTS, handle, tenant=tenant, start_time=start_time
        )
        if writing is not None:
            await writing
            writing = None
        await staging.write(projector.take_rows())
    finally:
        if writing is not None:
            writing.cancel()
    return read_until


def summed(staging: Staging, max_meters_param: str) -> str:
    """SELECT of the staging rows summed per key (the largest for ``max`` meters)."""
    return (
        "SELECT tenant, window_start, meter, room, dispatch,"  # noqa: S608 - fixed text
        f" (CASE WHEN meter = ANY({max_meters_param}::text[]) THEN max(quantity)"
        " ELSE sum(quantity) END)::bigint, min(first_sequence), max(last_sequence)"
        f" FROM {staging.table} GROUP BY tenant, window_start, meter, room, dispatch"
    )
