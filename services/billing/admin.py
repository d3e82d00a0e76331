"""Operator actions: price book versions, plan assignments and usage limits (each an event)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from zoneinfo import ZoneInfo

import asyncpg
import msgspec

from services.billing.meters import DEFAULT, Catalogue
from services.billing.periods import month_name, month_of
from services.billing.schemas import LimitsReport, LimitStatus
from services.billing.store import SOURCE, Connection, enforce_limit
from shared.events import Envelope
from shared.events.billing import MeterPrice, PlanAssigned, PriceBookPublished, UsageLimitSet
from shared.outbox import add_to_outbox

_PLAN = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class BillingAdminError(ValueError):
    """An operator request that cannot be applied; the message says why."""


class PriceSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    cents: int
    per: int


class PriceBookFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A price book as written by hand (see services/billing/price_books/)."""

    plan: str
    effective_from: datetime
    currency: str = "BRL"
    note: str = ""
    # meter -> {"cents": ..., "per": ...}: cents for every `per` base units of the meter.
    prices: dict[str, PriceSpec]


def _check_meter(meter: str, catalogue: Catalogue) -> None:
    if meter not in catalogue.meters:
        raise BillingAdminError(f"unknown meter {meter!r}; one of: {', '.join(catalogue.meters)}")


async def publish_price_book(
    pool: asyncpg.Pool, book: PriceBookFile, catalogue: Catalogue = DEFAULT
) -> int:
    """Publish ``book`` as the plan's next version; returns the version."""
    if not _PLAN.match(book.plan):
        raise BillingAdminError(f"{book.plan!r} is not a plan name (a-z, 0-9, _ and -)")
    if not _CURRENCY.match(book.currency):
        raise BillingAdminError(f"{book.currency!r} is not an ISO 4217 currency like BRL")
    if book.effective_from.tzinfo is None:
        raise BillingAdminError("effective_from needs a time zone (e.g. 2026-02-01T00:00:00-03:00)")
    for meter, price in book.prices.items():
        _check_meter(meter, catalogue)
        if price.cents < 0 or price.per < 1:
            raise BillingAdminError(f"{meter}: cents must be 0 or more and per 1 or more")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("LOCK TABLE billing.price_books IN SHARE ROW EXCLUSIVE MODE")
        version: int = await conn.fetchval(
            "SELECT coalesce(max(version), 0) + 1 FROM billing.price_books WHERE plan = $1",
            book.plan,
        )
        await conn.execute(
            "INSERT INTO billing.price_books (plan, version, effective_from, currency, note)"
            " VALUES ($1, $2, $3, $4, $5)",
            book.plan,
            version,
            book.effective_from,
            book.currency,
            book.note,
        )
        await conn.executemany(
            "INSERT INTO billing.prices (plan, version, meter, cents, per)"
            " VALUES ($1, $2, $3, $4, $5)",
            [(book.plan, version, m, p.cents, p.per) for m, p in sorted(book.prices.items())],
        )
        prices = [
            MeterPrice(meter=m, cents=p.cents, per=p.per) for m, p in sorted(book.prices.items())
        ]
        await add_to_outbox(
            conn,
            PriceBookPublished(
                plan=book.plan,
                version=version,
                effective_from=book.effective_from,
                currency=book.currency,
                note=book.note,
                prices=prices,
            ),
            source=SOURCE,
            tenant="system",
            key=book.plan,
        )
    return version


async def assign_plan(pool: asyncpg.Pool, tenant: str, plan: str, effective_from: datetime) -> None:
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT 1 FROM billing.price_books WHERE plan = $1", plan):
            raise BillingAdminError(f"plan {plan!r} has no price book")
        await conn.execute(
            "INSERT INTO billing.plan_assignments (tenant, effective_from, plan)"
            " VALUES ($1, $2, $3)"
            " ON CONFLICT (tenant, effective_from) DO UPDATE SET plan = excluded.plan,"
            " assigned_at = now()",
            tenant,
            effective_from,
            plan,
        )
        await add_to_outbox(
            conn,
            PlanAssigned(plan=plan, effective_from=effective_from),
            source=SOURCE,
            tenant=tenant,
            key=tenant,
        )


async def set_limit(
    pool: asyncpg.Pool,
    tenant: str,
    meter: str,
    monthly_quantity: int | None,
    now: datetime,
    zone: ZoneInfo,
    catalogue: Catalogue = DEFAULT,
) -> list[Envelope]:
    """Set (or remove, with None) a tenant's monthly cap on a meter, and announce at once what
    it changes for the current month; returns the limit events."""
    _check_meter(meter, catalogue)
    if monthly_quantity is not None and monthly_quantity < 1:
        raise BillingAdminError("a monthly cap is 1 or more (in the meter's base unit)")
    async with pool.acquire() as conn, conn.transaction():
        if monthly_quantity is None:
            await conn.execute(
                "DELETE FROM billing.usage_limits WHERE tenant = $1 AND meter = $2", tenant, meter
            )
        else:
            await conn.execute(
                "INSERT INTO billing.usage_limits (tenant, meter, monthly_quantity)"
                " VALUES ($1, $2, $3) ON CONFLICT (tenant, meter) DO UPDATE SET"
                " monthly_quantity = excluded.monthly_quantity, updated_at = now()",
                tenant,
                meter,
                monthly_quantity,
            )
        events = [
            await add_to_outbox(
                conn,
                UsageLimitSet(meter=meter, monthly_quantity=monthly_quantity),
                source=SOURCE,
                tenant=tenant,
                key=meter,
            )
        ]
        events += await enforce_limit(conn, tenant, meter, month_of(now, zone), zone)
    return events


async def limits_report(
    conn: Connection,
    tenant: str,
    now: datetime,
    zone: ZoneInfo,
    catalogue: Catalogue = DEFAULT,
) -> LimitsReport:
    """The tenant's caps and where this month's usage stands against them."""
    month = month_of(now, zone)
    caps: Mapping[str, int] = {
        row["meter"]: row["monthly_quantity"]
        for row in await conn.fetch(
            "SELECT meter, monthly_quantity FROM billing.usage_limits WHERE tenant = $1", tenant
        )
    }
    reached: dict[str, list[int]] = {}
    for row in await conn.fetch(
        "SELECT meter, threshold FROM billing.limit_states WHERE tenant = $1"
        " AND month_start = $2 AND reached ORDER BY threshold",
        tenant,
        month.start,
    ):
        reached.setdefault(row["meter"], []).append(row["threshold"])
    quantities = {
        row["meter"]: row["quantity"]
        for row in await conn.fetch(
            "SELECT meter, quantity FROM billing.monthly_usage WHERE tenant = $1"
            " AND month_start = $2",
            tenant,
            month.start,
        )
    }
    limits = [
        LimitStatus(
            meter=meter,
            unit=catalogue.unit(meter),
            monthly_quantity=caps.get(meter),
            quantity=quantities.get(meter, 0),
            reached=reached.get(meter, []),
        )
        for meter in sorted(set(caps) | set(reached))
    ]
    return LimitsReport(
        month=month_name(now, zone),
        period_start=month.start,
        period_end=month.end,
        limits=limits,
        dispatch_blocked=any(100 in r for r in reached.values()),
    )
