"""Folding a range of the stream into a projector, and the staging table its rows go to."""

from __future__ import annotations

import asyncio
import gc
import secrets
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from contextlib import contextmanager

from services.billing.meters import METERED_EVENTS
from services.billing.projector import Projector, Row
from services.billing.store import Connection
from shared.bus import Bus
from shared.events import CODEC, EventCodec, EventDecodeError
from shared.replay import Batch, read_batches

FLUSH_ROWS = 200_000
PART_SETTING = "mediai.replay_part"
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
    """An unlogged table for one run's rows (keys may repeat: they are summed at the end).
    Each replaying process writes its rows under its own part number: the column's default,
    read from a setting of the writer's connection, so rows are copied as the projector hands
    them over instead of being rebuilt with one more field each (~6 % of a part's time)."""

    def __init__(self, conn: Connection, name: str | None = None, part: int = 0) -> None:
        self.conn = conn
        self.name = name or f"run_{secrets.token_hex(8)}"
        self.table = f"billing_replay.{self.name}"
        self.part = part
        self.rows = 0

    async def __aenter__(self) -> Staging:
        await self.conn.execute(
            f"CREATE UNLOGGED TABLE {self.table} (tenant text, window_start timestamptz,"
            " meter text, room text, dispatch text, quantity bigint, first_sequence bigint,"
            " last_sequence bigint, part int NOT NULL DEFAULT"
            f" coalesce(current_setting('{PART_SETTING}', true), '0')::int)"
            # Never vacuumed: it lives for one run. Autovacuum started on a million-row staging
            # table while the run summed it, and the DROP at the end waited for its cancelling
            # (deadlock_timeout, 1 s) on a 1M-event rebuild.
            " WITH (autovacuum_enabled = false)"
        )
        return self

    async def as_part(self) -> Staging:
        """Mark what this connection writes as this staging's part (a replay process's)."""
        await self.conn.execute("SELECT set_config($1, $2, false)", PART_SETTING, str(self.part))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.conn.execute(f"DROP TABLE IF EXISTS {self.table}")

    async def write(self, rows: list[Row]) -> None:
        if rows:
            await self.conn.copy_records_to_table(
                self.name, schema_name="billing_replay", records=rows, columns=ROW_COLUMNS
            )
            self.rows += len(rows)

    async def forget(self, part: int) -> None:
        """Drop what one part wrote (it is replayed again)."""
        await self.conn.execute(f"DELETE FROM {self.table} WHERE part = $1", part)  # noqa: S608


async def fold_range(
    bus: Bus,
    projector: Projector,
    staging: Staging,
    tenant: str | None,
    first: int,
    last: int,
    *,
    codec: EventCodec = CODEC,
    deferred: list[tuple[int, bytes]] | None = None,
) -> None:
    """Fold sequences ``first``..``last`` into ``projector``, writing full batches of rows to
    ``staging`` while reading on; the rows still held are the caller's to write. With
    ``deferred``, events that change intervals are kept there (sequence, payload) unfolded."""
    writing: asyncio.Task[None] | None = None
    deferring = projector.catalogue.interval_types if deferred is not None else frozenset()
    try:
        async for batch in read_batches(bus, METERED_EVENTS, first=first, last=last, tenant=tenant):
            fold(projector, batch, codec, deferring, deferred)
            if projector.held >= FLUSH_ROWS:
                if writing is not None:
                    await writing
                with collector_paused():
                    rows = projector.take_rows()
                writing = asyncio.create_task(staging.write(rows))
        if writing is not None:
            await writing
            writing = None
    finally:
        if writing is not None:
            writing.cancel()


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection inside a stretch of synchronous replay work.

    Folding a batch allocates a few dozen objects per event and keeps some (rows, keys, event
    ids), none of them in reference cycles; with the collector's default thresholds it runs
    every 700 allocations and now and then walks every row held, about a third of the fold's
    time. Paused, it runs once after the batch instead. Nothing else runs meanwhile (no await).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def fold(
    projector: Projector,
    batch: Batch,
    codec: EventCodec,
    deferring: AbstractSet[str],
    deferred: list[tuple[int, bytes]] | None,
) -> None:
    decode, apply = codec.decode, projector.apply
    with collector_paused():
        for sequence, payload in batch:
            try:
                event = decode(payload)
            except EventDecodeError:
                projector.undecodable(sequence)
                continue
            if event.type in deferring and deferred is not None:
                deferred.append((sequence, payload))
                continue
            apply(sequence, event)
