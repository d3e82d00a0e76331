"""A full rebuild of the live projection from the beginning of the stream (one command).

It holds the projection lock the live consumer takes for every event, so nothing is projected
meanwhile (the consumer waits; its messages are redelivered if the wait outlasts their ack time,
and the inbox absorbs that). Every event the consumer had applied is in the stream below the
sequence the rebuild reads up to, so the rebuilt tables, inbox and position replace the old
ones whole, in one transaction; the consumer then resumes after that sequence.
"""

from __future__ import annotations

import time
from datetime import timedelta
from zoneinfo import ZoneInfo

import asyncpg
import msgspec

from services.billing.fold import Staging
from services.billing.meters import DEFAULT, Catalogue
from services.billing.periods import Period, month_of, months_between
from services.billing.projector import Projector, ReplayStats
from services.billing.replay import replay_into, summed
from services.billing.store import CONSUMER, PROJECTION_LOCK, Connection, enforce_limit
from shared.bus import Bus
from shared.config import Settings


class RebuildResult(msgspec.Struct, kw_only=True):
    replay: ReplayStats
    read_until: int
    rows: int
    seconds: float
    replay_seconds: float

    @property
    def events_per_second(self) -> float:
        return self.replay.events / self.seconds if self.seconds else 0.0


async def rebuild(
    pool: asyncpg.Pool,
    bus: Bus,
    zone: ZoneInfo,
    catalogue: Catalogue = DEFAULT,
    *,
    split: Settings | None = None,
) -> RebuildResult:
    """Replace the usage projection with one replayed from the whole stream (across
    processes when it is long and ``split`` gives the settings they connect with)."""
    started = time.monotonic()
    async with pool.acquire() as lock:
        await lock.execute("SELECT pg_advisory_lock($1)", PROJECTION_LOCK)
        try:
            projector = Projector(catalogue, keep_inbox=True)
            async with pool.acquire() as conn, Staging(conn) as staging:
                read_until = await replay_into(bus, projector, staging, split=split)
                replayed = time.monotonic()
                async with conn.transaction():
                    rows = await _replace(conn, staging, projector, read_until, zone, catalogue)
        finally:
            await lock.execute("SELECT pg_advisory_unlock($1)", PROJECTION_LOCK)
    return RebuildResult(
        replay=projector.stats,
        read_until=read_until,
        rows=rows,
        seconds=time.monotonic() - started,
        replay_seconds=replayed - started,
    )


async def _replace(
    conn: Connection,
    staging: Staging,
    projector: Projector,
    read_until: int,
    zone: ZoneInfo,
    catalogue: Catalogue,
) -> int:
    await conn.execute("TRUNCATE billing.usage, billing.intervals, billing.monthly_usage")
    status = await conn.execute(
        "INSERT INTO billing.usage (tenant, window_start, meter, room, dispatch, quantity,"
        " first_sequence, last_sequence) " + summed(staging, "$1", in_key_order=True),
        catalogue.max_meters,
    )
    rows = int(status.split()[-1])
    await conn.copy_records_to_table(
        "intervals",
        schema_name="billing",
        columns=[
            "tenant",
            "meter",
            "key",
            "room",
            "started_at",
            "ended_at",
            "start_sequence",
            "end_sequence",
        ],
        records=[
            (
                i.tenant,
                i.meter,
                i.key,
                i.room,
                i.started_at,
                i.ended_at,
                i.start_sequence,
                i.end_sequence,
            )
            for i in projector.intervals.values()
        ],
    )
    await _monthly(conn, zone, catalogue)
    await conn.execute("DELETE FROM consumer_inbox WHERE consumer = $1", CONSUMER)
    await conn.copy_records_to_table(
        "consumer_inbox",
        columns=["consumer", "event_id", "stream_sequence"],
        records=[(CONSUMER, event_id, sequence) for event_id, sequence in projector.inbox or ()],
    )
    await conn.execute(
        "INSERT INTO consumer_positions (consumer, stream_sequence) VALUES ($1, $2)"
        " ON CONFLICT (consumer) DO UPDATE SET stream_sequence ="
        " greatest(consumer_positions.stream_sequence, excluded.stream_sequence),"
        " updated_at = now()",
        CONSUMER,
        read_until,
    )
    # Limits follow the rebuilt totals: announce whatever the rebuild changed.
    for row in await conn.fetch(
        "SELECT DISTINCT l.tenant, l.meter, m.month_start FROM billing.usage_limits l"
        " JOIN billing.monthly_usage m USING (tenant, meter)"
        " UNION SELECT tenant, meter, month_start FROM billing.limit_states WHERE reached"
        " ORDER BY 1, 2, 3"
    ):
        month = month_of(row["month_start"], zone)
        await enforce_limit(conn, row["tenant"], row["meter"], month, zone)
    await conn.execute("ANALYZE billing.usage")
    return rows


async def _monthly(conn: Connection, zone: ZoneInfo, catalogue: Catalogue) -> None:
    """Monthly totals from the rebuilt rows; month bounds come from Python's time zone data,
    the same as the live consumer uses."""
    bounds = await conn.fetchrow("SELECT min(window_start), max(window_start) FROM billing.usage")
    if bounds is None or bounds[0] is None:
        return
    months = months_between(Period(bounds[0], bounds[1] + timedelta(minutes=1)), zone)
    await conn.execute(
        "INSERT INTO billing.monthly_usage (tenant, month_start, meter, quantity)"
        " SELECT u.tenant, m.start, u.meter, (CASE WHEN u.meter = ANY($3::text[])"
        " THEN max(u.quantity) ELSE sum(u.quantity) END)::bigint FROM billing.usage u"
        " JOIN unnest($1::timestamptz[], $2::timestamptz[]) AS m(start, finish)"
        " ON u.window_start >= m.start AND u.window_start < m.finish"
        " GROUP BY u.tenant, m.start, u.meter",
        [p.start for _, p in months],
        [p.end for _, p in months],
        catalogue.max_meters,
    )
