"""SQL of the live projection: usage rows, intervals, monthly totals and usage-limit state."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING, TypeAlias
from zoneinfo import ZoneInfo

import asyncpg

from services.billing.limits import limit_changes
from services.billing.metering import Delta, Interval, IntervalId
from services.billing.periods import Period, month_name, month_of
from shared.events import Envelope
from shared.events.billing import UsageLimitCleared, UsageLimitReached
from shared.outbox import add_to_outbox

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    # A connection of its own or one lent by the pool: the SQL here runs on either.
    Connection: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
else:
    Connection = asyncpg.Connection

SOURCE = "mediai/billing"
CONSUMER = "billing-usage"
# Held shared by every live projection transaction and exclusively by a full rebuild, so a
# rebuild sees no projection write in flight while it replaces the tables.
PROJECTION_LOCK = 0x62696C6C696E67  # "billing"


@asynccontextmanager
async def projection_turn(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Wait for any running rebuild, then hold it off while one event is projected."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", PROJECTION_LOCK)
        yield


async def load_intervals(conn: Connection, ids: Sequence[IntervalId]) -> dict[IntervalId, Interval]:
    """The intervals an event touches, locked until the transaction ends.

    A missing one gets an empty placeholder row first, so two consumers seeing the two ends of
    the same interval at once queue on its row lock instead of overwriting each other.
    """
    if not ids:
        return {}
    ordered = sorted(set(ids))
    columns = ([i.tenant for i in ordered], [i.meter for i in ordered], [i.key for i in ordered])
    await conn.execute(
        "INSERT INTO billing.intervals (tenant, meter, key, room)"
        " SELECT tenant, meter, key, '' FROM unnest($1::text[], $2::text[], $3::text[])"
        " AS k(tenant, meter, key) ON CONFLICT DO NOTHING",
        *columns,
    )
    rows = await conn.fetch(
        "SELECT i.* FROM billing.intervals i"
        " JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(tenant, meter, key)"
        " USING (tenant, meter, key) ORDER BY tenant, meter, key FOR UPDATE OF i",
        *columns,
    )
    found = {}
    for row in rows:
        if row["started_at"] is None and row["ended_at"] is None:
            continue  # a placeholder: nothing seen yet
        interval = Interval(
            tenant=row["tenant"],
            meter=row["meter"],
            key=row["key"],
            room=row["room"],
            started_at=row["started_at"],
            ended_at=row["ended_at"],
            start_sequence=row["start_sequence"],
            end_sequence=row["end_sequence"],
        )
        found[interval.id] = interval
    return found


async def save_intervals(conn: Connection, intervals: Iterable[Interval]) -> None:
    await conn.executemany(
        "INSERT INTO billing.intervals (tenant, meter, key, room, started_at, ended_at,"
        " start_sequence, end_sequence) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " ON CONFLICT (tenant, meter, key) DO UPDATE SET room = excluded.room,"
        " started_at = excluded.started_at, ended_at = excluded.ended_at,"
        " start_sequence = excluded.start_sequence, end_sequence = excluded.end_sequence",
        [
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
            for i in intervals
        ],
    )


_ADD_USAGE = """
INSERT INTO billing.usage AS u (tenant, window_start, meter, room, dispatch, quantity,
                                first_sequence, last_sequence)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[],
                     $6::bigint[], $7::bigint[], $8::bigint[])
ON CONFLICT (tenant, window_start, meter, room, dispatch) DO UPDATE SET
    quantity = {combine},
    first_sequence = least(u.first_sequence, excluded.first_sequence),
    last_sequence = greatest(u.last_sequence, excluded.last_sequence)
"""
_SUM_USAGE = _ADD_USAGE.format(combine="u.quantity + excluded.quantity")
_MAX_USAGE = _ADD_USAGE.format(combine="greatest(u.quantity, excluded.quantity)")


async def add_usage(conn: Connection, deltas: Sequence[Delta]) -> None:
    """Apply deltas to the usage rows (one statement per kind; keys are unique per event)."""
    for op, statement in (("sum", _SUM_USAGE), ("max", _MAX_USAGE)):
        chosen = [d for d in deltas if d.op == op]
        if chosen:
            columns = list(
                zip(
                    *((*d.key, d.quantity, d.first_sequence, d.last_sequence) for d in chosen),
                    strict=True,
                )
            )
            await conn.execute(statement, *columns)


async def add_monthly(
    conn: Connection, deltas: Sequence[Delta], zone: ZoneInfo
) -> set[tuple[str, str, Period]]:
    """Add deltas to the monthly totals; returns the (tenant, meter, month) they touched."""
    sums: dict[tuple[str, datetime, str], int] = {}
    maxima: dict[tuple[str, datetime, str], int] = {}
    touched: set[tuple[str, str, Period]] = set()
    for delta in deltas:
        month = month_of(delta.key.window, zone)
        key = (delta.key.tenant, month.start, delta.key.meter)
        touched.add((delta.key.tenant, delta.key.meter, month))
        if delta.op == "max":
            maxima[key] = max(maxima.get(key, 0), delta.quantity)
        else:
            sums[key] = sums.get(key, 0) + delta.quantity
    for values, combine in (
        (sums, "m.quantity + excluded.quantity"),
        (maxima, "greatest(m.quantity, excluded.quantity)"),
    ):
        if values:
            keys = sorted(values)
            await conn.execute(
                "INSERT INTO billing.monthly_usage AS m (tenant, month_start, meter, quantity)"  # noqa: S608 - fixed text
                " SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::bigint[])"
                " ON CONFLICT (tenant, month_start, meter) DO UPDATE SET quantity = " + combine,
                [k[0] for k in keys],
                [k[1] for k in keys],
                [k[2] for k in keys],
                [values[k] for k in keys],
            )
    return touched


async def limited_meters(conn: Connection, tenant: str) -> set[str]:
    """Meters of a tenant with a cap, or with a threshold still marked reached."""
    rows = await conn.fetch(
        "SELECT meter FROM billing.usage_limits WHERE tenant = $1"
        " UNION SELECT meter FROM billing.limit_states WHERE tenant = $1 AND reached",
        tenant,
    )
    return {row["meter"] for row in rows}


async def enforce_limit(
    conn: Connection, tenant: str, meter: str, month: Period, zone: ZoneInfo
) -> list[Envelope]:
    """Announce every threshold of ``meter``'s cap newly reached or no longer reached in
    ``month`` (outbox, same transaction); returns the events."""
    cap = await conn.fetchval(
        "SELECT monthly_quantity FROM billing.usage_limits WHERE tenant = $1 AND meter = $2",
        tenant,
        meter,
    )
    quantity = (
        await conn.fetchval(
            "SELECT quantity FROM billing.monthly_usage"
            " WHERE tenant = $1 AND month_start = $2 AND meter = $3",
            tenant,
            month.start,
            meter,
        )
        or 0
    )
    states = {
        row["threshold"]: row
        for row in await conn.fetch(
            "SELECT threshold, reached, revision FROM billing.limit_states"
            " WHERE tenant = $1 AND meter = $2 AND month_start = $3 ORDER BY threshold FOR UPDATE",
            tenant,
            meter,
            month.start,
        )
    }
    reached = {threshold for threshold, row in states.items() if row["reached"]}
    events = []
    for change in limit_changes(quantity, cap, reached):
        revision = (states[change.threshold]["revision"] if change.threshold in states else 0) + 1
        await conn.execute(
            "INSERT INTO billing.limit_states (tenant, meter, month_start, threshold, month_end,"
            " reached, quantity, monthly_quantity, revision) VALUES ($1, $2, $3, $4, $5, $6, $7,"
            " $8, $9) ON CONFLICT (tenant, meter, month_start, threshold) DO UPDATE SET"
            " reached = excluded.reached, quantity = excluded.quantity,"
            " monthly_quantity = excluded.monthly_quantity, revision = excluded.revision",
            tenant,
            meter,
            month.start,
            change.threshold,
            month.end,
            change.reached,
            quantity,
            cap,
            revision,
        )
        name = month_name(month.start, zone)
        data: UsageLimitReached | UsageLimitCleared
        if change.reached:
            assert cap is not None
            data = UsageLimitReached(
                meter=meter,
                threshold_percent=change.threshold,
                monthly_quantity=cap,
                quantity=quantity,
                month=name,
                period_start=month.start,
                period_end=month.end,
                revision=revision,
            )
        else:
            data = UsageLimitCleared(
                meter=meter,
                threshold_percent=change.threshold,
                monthly_quantity=cap,
                quantity=quantity,
                month=name,
                period_start=month.start,
                period_end=month.end,
                revision=revision,
            )
        events.append(await add_to_outbox(conn, data, source=SOURCE, tenant=tenant, key=meter))
    return events


async def project(
    conn: Connection,
    deltas: Sequence[Delta],
    intervals: Sequence[Interval],
    zone: ZoneInfo,
) -> list[Envelope]:
    """Write one event's metering: intervals, usage rows, monthly totals, then limits."""
    await save_intervals(conn, intervals)
    if not deltas:
        return []
    await add_usage(conn, deltas)
    touched = await add_monthly(conn, deltas, zone)
    events = []
    limited: dict[str, set[str]] = {}
    for tenant, meter, month in sorted(touched):
        if tenant not in limited:
            limited[tenant] = await limited_meters(conn, tenant)
        if meter in limited[tenant]:
            events += await enforce_limit(conn, tenant, meter, month, zone)
    return events
