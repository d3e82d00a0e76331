"""Monthly invoices: drafts computed from the live projection, issued ones frozen with an event."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from services.billing import queries
from services.billing.meters import Catalogue
from services.billing.periods import PeriodError, month_name, month_period
from services.billing.pricing import Line, currency
from services.billing.schemas import Invoice, InvoiceLine, InvoiceSummary
from services.billing.store import SOURCE, Connection
from shared.events.billing import InvoiceIssued
from shared.outbox import add_to_outbox

log = logging.getLogger(__name__)


def invoice_id(tenant: str, month: str) -> str:
    return f"inv-{tenant}-{month}"


def month_of_id(tenant: str, identifier: str) -> str | None:
    prefix = f"inv-{tenant}-"
    return identifier.removeprefix(prefix) if identifier.startswith(prefix) else None


def line_of(line: Line) -> InvoiceLine:
    return InvoiceLine(
        meter=line.meter,
        unit=line.unit,
        quantity=line.quantity,
        unit_price_cents=line.unit_price_cents,
        per=line.per,
        amount_cents=line.amount_cents,
        price_plan=line.plan,
        price_version=line.version,
        first_sequence=line.first_sequence,
        last_sequence=line.last_sequence,
    )


async def draft(
    conn: Connection, tenant: str, month: str, zone: ZoneInfo, catalogue: Catalogue
) -> Invoice:
    """The invoice of ``month`` as the live projection would issue it now."""
    period = month_period(month, zone)
    found, lines = await queries.priced(conn, queries.LIVE, tenant, tenant, period, catalogue)
    return Invoice(
        id=invoice_id(tenant, month),
        month=month,
        status="draft",
        period_start=period.start,
        period_end=period.end,
        currency=currency(found),
        total_cents=sum(line.amount_cents for line in lines),
        lines=[line_of(line) for line in lines],
        price_books=sorted({f"{line.plan}@{line.version}" for line in lines}),
        first_sequence=min((line.first_sequence for line in lines), default=0),
        last_sequence=max((line.last_sequence for line in lines), default=0),
        projected_through=await queries.projected_through(conn),
    )


async def issued(conn: Connection, tenant: str, identifier: str) -> Invoice | None:
    row = await conn.fetchrow(
        "SELECT * FROM billing.invoices WHERE tenant = $1 AND id = $2", tenant, identifier
    )
    if row is None:
        return None
    lines = await conn.fetch(
        "SELECT * FROM billing.invoice_lines WHERE tenant = $1 AND invoice_id = $2 ORDER BY line",
        tenant,
        identifier,
    )
    return Invoice(
        id=row["id"],
        month=row["month"],
        status="issued",
        period_start=row["period_start"],
        period_end=row["period_end"],
        currency=row["currency"],
        total_cents=row["total_cents"],
        lines=[
            InvoiceLine(
                meter=r["meter"],
                unit=r["unit"],
                quantity=r["quantity"],
                unit_price_cents=r["unit_price_cents"],
                per=r["per"],
                amount_cents=r["amount_cents"],
                price_plan=r["plan"],
                price_version=r["version"],
                first_sequence=r["first_sequence"],
                last_sequence=r["last_sequence"],
            )
            for r in lines
        ],
        price_books=sorted({f"{r['plan']}@{r['version']}" for r in lines}),
        first_sequence=row["first_sequence"],
        last_sequence=row["last_sequence"],
        projected_through=row["projected_through"],
        issued_at=row["issued_at"],
    )


async def find(
    conn: Connection, tenant: str, identifier: str, zone: ZoneInfo, catalogue: Catalogue
) -> Invoice | None:
    """An issued invoice, or the draft of a month that has none yet."""
    found = await issued(conn, tenant, identifier)
    month = month_of_id(tenant, identifier)
    if found is not None or month is None:
        return found
    try:
        return await draft(conn, tenant, month, zone, catalogue)
    except PeriodError:
        return None


async def summaries(
    conn: Connection, tenant: str, zone: ZoneInfo, catalogue: Catalogue
) -> list[InvoiceSummary]:
    """Issued invoices and the drafts of months with usage and no invoice yet, newest first."""
    rows = await conn.fetch(
        "SELECT id, month, currency, total_cents, issued_at FROM billing.invoices"
        " WHERE tenant = $1",
        tenant,
    )
    found = {
        row["month"]: InvoiceSummary(
            id=row["id"],
            month=row["month"],
            status="issued",
            currency=row["currency"],
            total_cents=row["total_cents"],
            issued_at=row["issued_at"],
        )
        for row in rows
    }
    starts = await conn.fetch(
        "SELECT DISTINCT month_start FROM billing.monthly_usage WHERE tenant = $1"
        " AND quantity <> 0",
        tenant,
    )
    for row in starts:
        month = month_name(row["month_start"], zone)
        if month not in found:
            invoice = await draft(conn, tenant, month, zone, catalogue)
            found[month] = InvoiceSummary(
                id=invoice.id,
                month=month,
                status="draft",
                currency=invoice.currency,
                total_cents=invoice.total_cents,
            )
    return [found[month] for month in sorted(found, reverse=True)]


async def issue(
    pool: asyncpg.Pool, tenant: str, month: str, zone: ZoneInfo, catalogue: Catalogue
) -> tuple[Invoice, bool]:
    """Freeze ``month``'s invoice and announce it (``InvoiceIssued``, same transaction);
    returns it and whether it was issued now (False: it already was)."""
    async with pool.acquire() as conn, conn.transaction():
        # One issuer per tenant at a time, so two never race to freeze the same month.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('billing.invoice:' || $1))", tenant
        )
        identifier = invoice_id(tenant, month)
        existing = await issued(conn, tenant, identifier)
        if existing is not None:
            return existing, False
        invoice = await draft(conn, tenant, month, zone, catalogue)
        await conn.execute(
            "INSERT INTO billing.invoices (tenant, id, month, period_start, period_end, currency,"
            " total_cents, first_sequence, last_sequence, projected_through)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            tenant,
            invoice.id,
            month,
            invoice.period_start,
            invoice.period_end,
            invoice.currency,
            invoice.total_cents,
            invoice.first_sequence,
            invoice.last_sequence,
            invoice.projected_through,
        )
        await conn.executemany(
            "INSERT INTO billing.invoice_lines (tenant, invoice_id, line, meter, unit, quantity,"
            " unit_price_cents, per, amount_cents, plan, version, first_sequence, last_sequence)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            [
                (
                    tenant,
                    invoice.id,
                    number,
                    line.meter,
                    line.unit,
                    line.quantity,
                    line.unit_price_cents,
                    line.per,
                    line.amount_cents,
                    line.price_plan,
                    line.price_version,
                    line.first_sequence,
                    line.last_sequence,
                )
                for number, line in enumerate(invoice.lines, start=1)
            ],
        )
        await add_to_outbox(
            conn,
            InvoiceIssued(
                invoice_id=invoice.id,
                month=month,
                period_start=invoice.period_start,
                period_end=invoice.period_end,
                currency=invoice.currency,
                total_cents=invoice.total_cents,
                lines=len(invoice.lines),
                price_books=invoice.price_books,
                first_sequence=invoice.first_sequence,
                last_sequence=invoice.last_sequence,
            ),
            source=SOURCE,
            tenant=tenant,
            key=invoice.id,
        )
    return (await _reread(pool, tenant, invoice.id)) or invoice, True


async def _reread(pool: asyncpg.Pool, tenant: str, identifier: str) -> Invoice | None:
    async with pool.acquire() as conn:
        return await issued(conn, tenant, identifier)


async def issue_month(
    pool: asyncpg.Pool,
    month: str,
    zone: ZoneInfo,
    catalogue: Catalogue,
    tenant: str | None = None,
) -> list[tuple[Invoice, bool]]:
    """Issue ``month``'s invoices: of one tenant, or of every tenant with usage in it."""
    period = month_period(month, zone)
    if tenant is not None:
        tenants = [tenant]
    else:
        rows = await pool.fetch(
            "SELECT DISTINCT tenant FROM billing.monthly_usage WHERE month_start = $1"
            " AND quantity <> 0 ORDER BY tenant",
            period.start,
        )
        tenants = [row["tenant"] for row in rows]
    return [await issue(pool, name, month, zone, catalogue) for name in tenants]


def due_month(now: datetime, grace: timedelta, zone: ZoneInfo) -> str:
    """The month whose invoices are due: the last one that ended at least ``grace`` ago."""
    current = month_period(month_name(now - grace, zone), zone)
    return month_name(current.start - timedelta(seconds=1), zone)


async def issue_due(
    pool: asyncpg.Pool, now: datetime, grace: timedelta, zone: ZoneInfo, catalogue: Catalogue
) -> int:
    """Issue the invoices of the month that just closed (once its grace period is over).

    Only that month: older months without an invoice are an operator's call
    (``mediai billing invoices issue --month``), never issued behind their back."""
    month = due_month(now, grace, zone)
    results = await issue_month(pool, month, zone, catalogue)
    created = sum(1 for _, new in results if new)
    if created:
        log.info("issued %d invoices for %s", created, month)
    return created
