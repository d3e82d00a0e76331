"""Replays of the raw stream: reading it, folding it, and writing the rows in bulk.

A replay reads the MEDIAI_EVENTS stream directly (an ephemeral consumer, every version of
every metered type, optionally one tenant's subjects only) up to the last sequence it had when
it started, decodes with the one codec (old versions come back upcast), and folds the events
with the same metering as the live consumer. Rows go to an unlogged staging table per run and
are summed into their target at the end, so memory stays bounded however long the stream is.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime

import nats.errors
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.billing.meters import METERED_EVENTS
from services.billing.projector import Projector, Row
from services.billing.store import Connection
from shared import subjects
from shared.bus import Bus
from shared.events import CODEC, EVENTS_STREAM, EventCodec, EventDecodeError

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


class ReplayError(Exception):
    """The stream could not be read to the end (NATS unavailable or not answering)."""


async def read_stream(
    bus: Bus,
    handle: Callable[[int, bytes], Awaitable[None]],
    *,
    tenant: str | None = None,
    start_time: datetime | None = None,
    stall_timeout: float = 60.0,
) -> int:
    """Call ``handle(stream sequence, payload)`` for each metered event, oldest first, up to the
    stream's last sequence at the start; returns that sequence.

    An ordered consumer (flow control, gap detection that resumes at the right sequence) means
    a slow handler delays the replay but never loses a message.
    """
    stream = subjects.stream_name(EVENTS_STREAM)
    end: int = (await bus.js.stream_info(stream)).state.last_seq
    if end == 0:
        return 0
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    progress = 0

    async def on_message(message: Msg) -> None:
        nonlocal progress
        if done.done():
            return
        try:
            metadata = message.metadata
            sequence = metadata.sequence.stream
            if sequence > end:
                done.set_result(None)
                return
            progress += 1
            await handle(sequence, message.data)
            if sequence >= end or metadata.num_pending == 0:
                done.set_result(None)
        except Exception as error:  # noqa: BLE001 - handed to the caller, never swallowed
            done.set_exception(error)

    filters = [subjects.any_version_filter(t, tenant) for t in METERED_EVENTS]
    first = 1
    if start_time is not None:
        found = await _first_sequence_since(bus, stream, filters, start_time)
        if found is None or found > end:
            return end  # nothing stored since start_time matches
        first = found
    config = ConsumerConfig(
        filter_subjects=filters,
        # A start sequence rather than a start time: the ordered consumer resumes after a gap
        # by sequence, and the server refuses a start time and a start sequence together.
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=first,
        # Ephemeral: the server removes it by itself if this process dies mid-replay.
        inactive_threshold=120.0,
    )
    subscription = await bus.js.subscribe(
        filters[0],
        stream=stream,
        cb=on_message,
        config=config,
        ordered_consumer=True,
        idle_heartbeat=2.0,
    )
    try:
        info = await subscription.consumer_info()
        delivered = info.delivered.stream_seq if info.delivered else 0
        if info.num_pending == 0 and not delivered:
            return end  # nothing matches
        seen = -1
        while not done.done():
            try:
                await asyncio.wait_for(asyncio.shield(done), timeout=stall_timeout)
            except TimeoutError:
                if progress == seen:
                    raise ReplayError("the stream stopped delivering before its end") from None
                seen = progress
        done.result()
        return end
    finally:
        await subscription.unsubscribe()


async def _first_sequence_since(
    bus: Bus, stream: str, filters: list[str], start_time: datetime
) -> int | None:
    """The sequence of the first message matching ``filters`` stored at or after
    ``start_time``, or None."""
    name = f"billing-seek-{secrets.token_hex(6)}"
    await bus.js.add_consumer(
        stream,
        ConsumerConfig(
            name=name,
            filter_subjects=filters,
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=start_time,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=30.0,
            mem_storage=True,
            num_replicas=1,
        ),
    )
    subscription = await bus.js.pull_subscribe_bind(consumer=name, stream=stream)
    try:
        if (await subscription.consumer_info()).num_pending == 0:
            return None
        [message] = await subscription.fetch(1, timeout=5.0)
        sequence: int = message.metadata.sequence.stream
        return sequence
    finally:
        await subscription.unsubscribe()
        with contextlib.suppress(nats.errors.Error, TimeoutError):
            await bus.js.delete_consumer(stream, name)


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
        read_until = await read_stream(bus, handle, tenant=tenant, start_time=start_time)
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
