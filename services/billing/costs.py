"""What some dispatches have cost so far, priced like a draft invoice with the price books in
force: the web console's "agents' cost so far" of a session (its timeline shows quantities;
prices are billing's alone). An estimate of the agents' part: people's minutes are metered by
room, which a session shares with the room's other sessions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import asyncpg
import msgspec
from litestar import get
from litestar.params import Parameter

from services.billing import queries
from services.billing.invoices import line_of
from services.billing.meters import DEFAULT
from services.billing.periods import Period
from services.billing.pricing import PricingError, currency
from services.billing.schemas import Cents, InvoiceLine
from shared.http import ApiError
from shared.tenants import Tenant
from shared.viewtokens import view_scope

# How far back a dispatch's usage is looked for: sessions last hours, not months.
LOOKBACK = timedelta(days=90)


class UsageCost(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    dispatches: list[str]
    currency: str
    total_cents: Cents
    lines: list[InvoiceLine]


@get(
    "/v1/usage/cost",
    operation_id="getUsageCost",
    summary="What some dispatches' usage has cost so far, at the prices in force",
    opt=view_scope("usage:read"),
)
async def get_usage_cost(
    tenant: Tenant,
    pool: asyncpg.Pool,
    dispatch: Annotated[list[str], Parameter(min_items=1, max_items=50)],
) -> UsageCost:
    now = datetime.now(UTC)
    span = Period(now - LOOKBACK, now + timedelta(minutes=1))
    try:
        async with pool.acquire() as conn:
            found, lines = await queries.priced(
                conn, queries.DISPATCHES, tenant.id, tenant.id, span, DEFAULT, extra=(dispatch,)
            )
        money = currency(found)
    except PricingError as error:
        raise ApiError(str(error), code="pricing_unavailable", status_code=409) from None
    return UsageCost(
        dispatches=dispatch,
        currency=money,
        total_cents=sum(line.amount_cents for line in lines),
        lines=[line_of(line) for line in lines],
    )
