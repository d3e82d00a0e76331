"""Audit by replay: rebuild a tenant's usage for a period from the raw stream into a separate
table, price it, and report every difference with the live projection and issued invoices."""

from __future__ import annotations

import time
from datetime import timedelta
from zoneinfo import ZoneInfo

import asyncpg
import msgspec

from services.billing import invoices, queries
from services.billing.auditing import compare_invoice, compare_meters, differing_meters
from services.billing.fold import Staging
from services.billing.meters import DEFAULT, Catalogue
from services.billing.periods import Period
from services.billing.pricing import PriceBook, currency, segments
from services.billing.projector import Projector
from services.billing.replay import replay_into, summed
from services.billing.schemas import AuditReport, ReplaySummary, RowDifference
from services.billing.store import SOURCE, Connection
from shared.bus import Bus
from shared.config import Settings
from shared.events import new_event_id
from shared.events.billing import AuditCompleted
from shared.outbox import add_to_outbox

ROW_DIFFERENCES_SHOWN = 100


class PriceBookNotFoundError(LookupError):
    """The what-if price book (plan and version) does not exist."""


async def what_if_book(conn: Connection, plan: str, version: int) -> PriceBook:
    for book in await queries.price_books(conn):
        if book.plan == plan and book.version == version:
            return book
    raise PriceBookNotFoundError(f"no price book {plan}@{version}")


async def run_audit(
    pool: asyncpg.Pool,
    bus: Bus,
    *,
    tenant: str,
    period: Period,
    zone: ZoneInfo,
    lookback: timedelta,
    what_if: tuple[str, int] | None = None,
    keep_rows: bool = False,
    catalogue: Catalogue = DEFAULT,
    audit_id: str | None = None,
    split: Settings | None = None,
) -> AuditReport:
    """Replay, compare, record the report and announce it (``AuditCompleted``). ``audit_id``
    names the audit (default: a new one); ``split``: the settings replay processes connect
    with, to split a long replay across them."""
    started = time.monotonic()
    audit_id = audit_id or f"aud-{new_event_id()}"
    async with pool.acquire() as conn:
        book = await what_if_book(conn, *what_if) if what_if else None
        # Fail before the replay if the period cannot be priced at all.
        segments(
            period,
            await queries.plan_assignments(conn, tenant),
            await queries.price_books(conn),
            book,
        )
        projector = Projector(catalogue, period=period)
        async with Staging(conn) as staging:
            read_until = await replay_into(
                bus,
                projector,
                staging,
                tenant=tenant,
                start_time=period.start - lookback,
                split=split,
            )
            await conn.execute(
                "INSERT INTO billing_replay.audit_usage (audit_id, window_start, meter, room,"  # noqa: S608 - fixed text
                " dispatch, quantity, first_sequence, last_sequence)"
                " SELECT $2, window_start, meter, room, dispatch, quantity, first_seq, last_seq"
                " FROM ("
                + summed(staging, "$1")
                + ") AS s (tenant, window_start, meter, room, dispatch,"
                " quantity, first_seq, last_seq) WHERE tenant = $3",
                catalogue.max_meters,
                audit_id,
                tenant,
            )
        try:
            report = await _report(
                conn, audit_id, tenant, period, book, projector, read_until, catalogue
            )
        finally:
            if not keep_rows:
                await conn.execute(
                    "DELETE FROM billing_replay.audit_usage WHERE audit_id = $1", audit_id
                )
        report = msgspec.structs.replace(report, seconds=round(time.monotonic() - started, 3))
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO billing.audits (id, tenant, period_start, period_end, mode,"
                " price_book, matches, report) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                audit_id,
                tenant,
                period.start,
                period.end,
                report.mode,
                report.price_book,
                report.matches,
                msgspec.to_builtins(report),
            )
            await add_to_outbox(
                conn,
                AuditCompleted(
                    audit_id=audit_id,
                    period_start=period.start,
                    period_end=period.end,
                    mode=report.mode,
                    price_book=report.price_book,
                    replayed_events=report.replay.applied,
                    first_sequence=report.replay.first_sequence,
                    last_sequence=report.replay.last_sequence,
                    currency=report.currency,
                    replayed_cents=report.replayed_cents,
                    live_cents=report.live_cents,
                    invoiced_cents=report.invoiced_cents,
                    meters_differing=differing_meters(report.meters, report.invoices),
                    matches=report.matches,
                ),
                source=SOURCE,
                tenant=tenant,
                key=audit_id,
            )
    return report


async def _report(
    conn: Connection,
    audit_id: str,
    tenant: str,
    period: Period,
    book: PriceBook | None,
    projector: Projector,
    read_until: int,
    catalogue: Catalogue,
) -> AuditReport:
    found, replayed_lines = await queries.priced(
        conn, queries.AUDIT, audit_id, tenant, period, catalogue, book
    )
    _, live_lines = await queries.priced(
        conn, queries.LIVE, tenant, tenant, period, catalogue, book
    )
    meters = compare_meters(
        await queries.meter_totals(conn, queries.AUDIT, audit_id, period, catalogue),
        await queries.meter_totals(conn, queries.LIVE, tenant, period, catalogue),
        replayed_lines,
        live_lines,
        catalogue,
    )
    compared = []
    for row in await conn.fetch(
        "SELECT id FROM billing.invoices WHERE tenant = $1 AND period_start >= $2"
        " AND period_end <= $3 ORDER BY period_start",
        tenant,
        period.start,
        period.end,
    ):
        invoice = await invoices.issued(conn, tenant, row["id"])
        assert invoice is not None
        _, month_lines = await queries.priced(
            conn,
            queries.AUDIT,
            audit_id,
            tenant,
            Period(invoice.period_start, invoice.period_end),
            catalogue,
            book,
        )
        compared.append(compare_invoice(invoice, month_lines))
    differences = await conn.fetch(
        "WITH a AS (SELECT window_start, meter, room, dispatch, quantity"
        "  FROM billing_replay.audit_usage WHERE audit_id = $1),"
        " l AS (SELECT window_start, meter, room, dispatch, quantity FROM billing.usage"
        "  WHERE tenant = $2 AND window_start >= $3 AND window_start < $4)"
        " SELECT window_start, meter, room, dispatch, coalesce(a.quantity, 0) AS replayed,"
        " coalesce(l.quantity, 0) AS live, count(*) OVER () AS total"
        " FROM a FULL JOIN l USING (window_start, meter, room, dispatch)"
        " WHERE coalesce(a.quantity, 0) <> coalesce(l.quantity, 0)"
        " ORDER BY window_start, meter, room, dispatch LIMIT $5",
        audit_id,
        tenant,
        period.start,
        period.end,
        ROW_DIFFERENCES_SHOWN,
    )
    stats = projector.stats
    meters_differ = differing_meters(meters, compared)
    return AuditReport(
        id=audit_id,
        tenant=tenant,
        period_start=period.start,
        period_end=period.end,
        mode="what_if" if book else "in_force",
        price_book=book.label if book else "",
        currency=currency(found),
        replay=ReplaySummary(
            events=stats.events,
            applied=stats.applied,
            duplicates=stats.duplicates,
            rejected=stats.rejected,
            undecodable=stats.undecodable,
            first_sequence=stats.first_sequence,
            last_sequence=stats.last_sequence,
            read_until=read_until,
        ),
        live_projected_through=await queries.projected_through(conn),
        meters=meters,
        replayed_cents=sum(m.replayed_cents for m in meters),
        live_cents=sum(m.live_cents for m in meters),
        invoices=compared,
        invoiced_cents=sum(i.invoiced_cents for i in compared) if compared else None,
        row_differences=[
            RowDifference(
                window_start=r["window_start"],
                meter=r["meter"],
                room=r["room"],
                dispatch=r["dispatch"],
                replayed=r["replayed"],
                live=r["live"],
            )
            for r in differences
        ],
        row_difference_count=differences[0]["total"] if differences else 0,
        matches=not meters_differ and not differences,
        seconds=0.0,
    )
