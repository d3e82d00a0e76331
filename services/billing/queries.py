"""SQL reads: usage reports, totals per meter, price books and plans, open intervals."""

from __future__ import annotations

from typing import Literal

import asyncpg

from services.billing.meters import Catalogue
from services.billing.periods import Period
from services.billing.pricing import (
    Line,
    MeterTotal,
    PlanAssignment,
    Price,
    PriceBook,
    Segment,
    price_lines,
    segments,
)
from services.billing.store import CONSUMER, Connection

GroupBy = Literal["room", "dispatch", "meter", "day"]

# Where usage rows are read from: the live projection (by tenant) or an audit's replay (by
# audit id). Fixed strings: nothing from a request is ever put into SQL text.
Source = Literal[
    "billing.usage WHERE tenant = $1",
    "billing_replay.audit_usage WHERE audit_id = $1",
    "billing.usage WHERE tenant = $1 AND dispatch = ANY($5::text[])",
]
LIVE: Source = "billing.usage WHERE tenant = $1"
# Some dispatches' rows (the dispatch ids are the fifth parameter).
DISPATCHES: Source = "billing.usage WHERE tenant = $1 AND dispatch = ANY($5::text[])"
AUDIT: Source = "billing_replay.audit_usage WHERE audit_id = $1"

_AGGREGATE = "CASE WHEN meter = ANY($4::text[]) THEN max(quantity) ELSE sum(quantity) END::bigint"


async def meter_totals(
    conn: Connection,
    source: Source,
    owner: str,
    period: Period,
    catalogue: Catalogue,
    *extra: object,
) -> dict[str, MeterTotal]:
    """Quantity per meter over ``period`` (added up; the largest for ``max`` meters);
    ``extra`` are the source's own parameters, from $5."""
    rows = await conn.fetch(
        f"SELECT meter, {_AGGREGATE} AS quantity, min(first_sequence) AS first,"  # noqa: S608 - fixed text
        f" max(last_sequence) AS last FROM {source}"
        " AND window_start >= $2 AND window_start < $3 GROUP BY meter",
        owner,
        period.start,
        period.end,
        catalogue.max_meters,
        *extra,
    )
    return {r["meter"]: MeterTotal(r["quantity"], r["first"], r["last"]) for r in rows}


async def price_books(conn: Connection) -> list[PriceBook]:
    books = await conn.fetch("SELECT * FROM billing.price_books ORDER BY plan, version")
    prices = await conn.fetch("SELECT * FROM billing.prices")
    by_book: dict[tuple[str, int], dict[str, Price]] = {}
    for row in prices:
        by_book.setdefault((row["plan"], row["version"]), {})[row["meter"]] = Price(
            row["cents"], row["per"]
        )
    return [
        PriceBook(
            plan=row["plan"],
            version=row["version"],
            effective_from=row["effective_from"],
            currency=row["currency"],
            prices=by_book.get((row["plan"], row["version"]), {}),
        )
        for row in books
    ]


async def plan_assignments(conn: Connection, tenant: str) -> list[PlanAssignment]:
    rows = await conn.fetch(
        "SELECT plan, effective_from FROM billing.plan_assignments WHERE tenant = $1"
        " ORDER BY effective_from",
        tenant,
    )
    return [PlanAssignment(row["plan"], row["effective_from"]) for row in rows]


async def priced(
    conn: Connection,
    source: Source,
    owner: str,
    tenant: str,
    period: Period,
    catalogue: Catalogue,
    what_if: PriceBook | None = None,
    extra: tuple[object, ...] = (),
) -> tuple[list[Segment], list[Line]]:
    """The lines of ``period``'s usage: split where the price book in force changes, one line
    per (meter, version)."""
    found = segments(period, await plan_assignments(conn, tenant), await price_books(conn), what_if)
    totals = [
        (
            segment,
            await meter_totals(
                conn, source, owner, Period(segment.start, segment.end), catalogue, *extra
            ),
        )
        for segment in found
    ]
    return found, price_lines(totals, catalogue)


async def usage_by(
    conn: Connection,
    tenant: str,
    period: Period,
    group_by: GroupBy,
    zone: str,
    catalogue: Catalogue,
) -> list[asyncpg.Record]:
    """Rows (group, meter, quantity) of a tenant's usage over ``period``."""
    group = {
        "room": "room",
        "dispatch": "dispatch",
        "meter": "meter",
        "day": "to_char(window_start AT TIME ZONE $5, 'YYYY-MM-DD')",
    }[group_by]
    return list(
        await conn.fetch(
            f"SELECT {group} AS grp, meter, {_AGGREGATE} AS quantity FROM billing.usage"  # noqa: S608 - fixed text
            " WHERE tenant = $1 AND window_start >= $2 AND window_start < $3"
            f" GROUP BY grp, meter HAVING {_AGGREGATE} <> 0 ORDER BY grp, meter",
            tenant,
            period.start,
            period.end,
            catalogue.max_meters,
            *([zone] if group_by == "day" else []),
        )
    )


async def open_intervals(conn: Connection, tenant: str, period: Period) -> int:
    """Stays and egresses of a tenant begun before ``period`` ended and not closed yet (or
    closed with no start seen): not billed until both ends are known."""
    count: int = await conn.fetchval(
        "SELECT count(*) FROM billing.intervals WHERE tenant = $1"
        " AND (started_at IS NULL OR ended_at IS NULL)"
        " AND coalesce(started_at, ended_at) < $2",
        tenant,
        period.end,
    )
    return count


async def projected_through(conn: Connection) -> int:
    """The highest stream sequence the live projection has applied."""
    position: int | None = await conn.fetchval(
        "SELECT stream_sequence FROM consumer_positions WHERE consumer = $1", CONSUMER
    )
    return position or 0
