"""The billing service: the usage projection, usage and invoices, audits by replay."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
from litestar import Litestar, get, post
from litestar.params import Parameter

from services.billing import admin, invoices, queries
from services.billing.audit import PriceBookNotFoundError, run_audit
from services.billing.consumers import USAGE_PROJECTION, UsageProjector
from services.billing.costs import get_usage_cost
from services.billing.meters import DEFAULT
from services.billing.periods import BOUND, PeriodError, month_of, parse_bound, parse_range, period
from services.billing.pricing import PricingError
from services.billing.schemas import (
    AuditReport,
    AuditRequest,
    Invoice,
    InvoiceList,
    LimitsReport,
    UsageReport,
    UsageRow,
)
from shared import leases
from shared.background import BackgroundTask, every
from shared.bus import Bus
from shared.config import Settings
from shared.consumer import Consumer
from shared.contract import errors, links
from shared.http import ApiError, NotFoundError, ServiceUnavailableError, create_service_app
from shared.idempotency import KEY_PRUNER, RequestIds, idempotent
from shared.replay import ReplayError
from shared.tenants import Tenant
from shared.viewtokens import view_scope

log = logging.getLogger(__name__)
INVOICE_CHECK_SECONDS = 600.0
FROM_HELP = "A date (its whole day, billing time zone) or an ISO instant; default: this month"
TO_HELP = "A date (included) or an ISO instant (excluded); default: the end of this month"
GroupBy = Literal["room", "dispatch", "meter", "day"]


class InvalidPeriodError(ApiError):
    status_code = 400
    code = "invalid_period"


class PricingUnavailableError(ApiError):
    status_code = 409
    code = "pricing_unavailable"


def _zone(settings: Settings) -> ZoneInfo:
    return ZoneInfo(settings.billing_timezone)


def _period(start: str | None, end: str | None, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The requested range; the current billing month when a bound is left out."""
    current = month_of(datetime.now(UTC), zone)
    try:
        # An empty bound is not a left-out one: it is refused like any other non-date.
        begin = parse_bound(start, zone, end=False) if start is not None else current.start
        finish = parse_bound(end, zone, end=True) if end is not None else current.end
        return period(begin, finish)
    except PeriodError as error:
        raise InvalidPeriodError(str(error)) from None


_PERIOD = {
    "invalid_period": "a bound is not a date or an ISO 8601 instant, or the period does not end "
    "after it starts"
}
_PRICING = {"pricing_unavailable": "no price book prices a meter of this period"}


@get(
    "/v1/usage",
    operation_id="getUsage",
    summary="Usage of the caller's tenant, grouped",
    responses=errors({400: _PERIOD}),
    opt=view_scope("usage:read"),
)
async def get_usage(
    tenant: Tenant,
    pool: asyncpg.Pool,
    settings: Settings,
    start: Annotated[
        str | None, Parameter(query="from", description=FROM_HELP, schema_extra=BOUND)
    ] = None,
    end: Annotated[
        str | None, Parameter(query="to", description=TO_HELP, schema_extra=BOUND)
    ] = None,
    group_by: Annotated[GroupBy, Parameter(query="group_by")] = "meter",
) -> UsageReport:
    zone = _zone(settings)
    begin, finish = _period(start, end, zone)
    async with pool.acquire() as conn:
        rows = await queries.usage_by(
            conn, tenant.id, period(begin, finish), group_by, settings.billing_timezone, DEFAULT
        )
        open_count = await queries.open_intervals(conn, tenant.id, period(begin, finish))
    return UsageReport(
        start=begin,
        end=finish,
        group_by=group_by,
        timezone=settings.billing_timezone,
        rows=[
            UsageRow(
                group=r["grp"],
                meter=r["meter"],
                unit=DEFAULT.unit(r["meter"]),
                quantity=r["quantity"],
            )
            for r in rows
        ],
        open_intervals=open_count,
    )


@get(
    "/v1/usage/limits",
    operation_id="getUsageLimits",
    summary="Monthly caps, this month",
    opt=view_scope("usage:read"),
)
async def get_limits(tenant: Tenant, pool: asyncpg.Pool, settings: Settings) -> LimitsReport:
    async with pool.acquire() as conn:
        return await admin.limits_report(conn, tenant.id, datetime.now(UTC), _zone(settings))


@get(
    "/v1/invoices",
    operation_id="listInvoices",
    summary="Issued invoices and drafts",
    responses=errors({409: _PRICING}),
    opt=view_scope("usage:read"),
)
async def list_invoices(tenant: Tenant, pool: asyncpg.Pool, settings: Settings) -> InvoiceList:
    async with pool.acquire() as conn:
        try:
            found = await invoices.summaries(conn, tenant.id, _zone(settings), DEFAULT)
        except PricingError as error:
            raise PricingUnavailableError(str(error)) from None
    return InvoiceList(invoices=found)


@get(
    "/v1/invoices/{invoice_id:str}",
    operation_id="getInvoice",
    summary="One invoice",
    responses=errors({404: {"not_found": "no invoice of that id in this tenant"}, 409: _PRICING}),
    opt=view_scope("usage:read"),
)
async def get_invoice(
    invoice_id: str, tenant: Tenant, pool: asyncpg.Pool, settings: Settings
) -> Invoice:
    async with pool.acquire() as conn:
        try:
            found = await invoices.find(conn, tenant.id, invoice_id, _zone(settings), DEFAULT)
        except PricingError as error:
            raise PricingUnavailableError(str(error)) from None
    if found is None:
        raise NotFoundError(f"no invoice {invoice_id}")
    return found


async def _stored_audit(pool: asyncpg.Pool, tenant: str, audit_id: str) -> AuditReport | None:
    report = await pool.fetchval(
        "SELECT report FROM billing.audits WHERE id = $1 AND tenant = $2", audit_id, tenant
    )
    return None if report is None else msgspec.convert(report, AuditReport)


@post(
    "/v1/audits",
    operation_id="createAudit",
    summary="Audit by replay of the stream",
    opt={**view_scope("audits:run"), **links(201, getAudit={"audit_id": "$response.body#/id"})},
    responses=errors(
        {
            400: {
                **_PERIOD,
                "invalid_price_book": "`pricePlan` and `priceVersion` go together, or neither",
            },
            404: {"price_book_not_found": "no price book of that plan and version"},
            409: _PRICING,
            503: {"replay_unavailable": "the event stream could not be replayed now"},
        }
    ),
)
async def create_audit(
    data: AuditRequest,
    tenant: Tenant,
    pool: asyncpg.Pool,
    bus: Bus,
    settings: Settings,
    ids: RequestIds,
) -> AuditReport:
    audit_id = f"aud-{ids.id('audit')}"
    # A retry (same Idempotency-Key) of an audit that was recorded although its answer was lost.
    if (earlier := await _stored_audit(pool, tenant.id, audit_id)) is not None:
        return earlier
    zone = _zone(settings)
    if (data.price_plan is None) != (data.price_version is None):
        raise ApiError(
            "give both pricePlan and priceVersion for a what-if, or neither",
            code="invalid_price_book",
        )
    try:
        chosen = parse_range(data.start, data.end, zone)
    except PeriodError as error:
        raise InvalidPeriodError(str(error)) from None
    what_if = None
    if data.price_plan is not None and data.price_version is not None:
        what_if = (data.price_plan, data.price_version)
    try:
        return await run_audit(
            pool,
            bus,
            tenant=tenant.id,
            period=chosen,
            zone=zone,
            lookback=timedelta(seconds=settings.billing_audit_lookback),
            what_if=what_if,
            audit_id=audit_id,
            split=settings,
        )
    except PriceBookNotFoundError as error:
        raise NotFoundError(str(error), code="price_book_not_found") from None
    except PricingError as error:
        raise PricingUnavailableError(str(error)) from None
    except ReplayError as error:
        raise ServiceUnavailableError(str(error), code="replay_unavailable") from None


@get(
    "/v1/audits/{audit_id:str}",
    operation_id="getAudit",
    summary="A past audit's report",
    responses=errors({404: {"not_found": "no audit of that id in this tenant"}}),
    opt=view_scope("audits:run"),
)
async def get_audit(audit_id: str, tenant: Tenant, pool: asyncpg.Pool) -> AuditReport:
    report = await _stored_audit(pool, tenant.id, audit_id)
    if report is None:
        raise NotFoundError(f"no audit {audit_id}")
    return report


async def _projection(app: Litestar) -> None:
    projector = UsageProjector(app.state.pool, _zone(app.state.settings))
    await Consumer(app.state.bus, USAGE_PROJECTION, projector).run()


async def _issue_due_invoices(app: Litestar) -> None:
    """Issue last month's invoices once its grace period is over."""
    settings: Settings = app.state.settings
    await invoices.issue_due(
        app.state.pool,
        datetime.now(UTC),
        timedelta(seconds=settings.billing_invoice_grace),
        _zone(settings),
        DEFAULT,
    )


def create_app(settings: Settings) -> Litestar:
    return create_service_app(
        service="billing",
        settings=settings,
        route_handlers=[
            get_usage,
            get_usage_cost,
            get_limits,
            list_invoices,
            get_invoice,
            idempotent(create_audit),
            get_audit,
        ],
        background=[
            BackgroundTask("usage-projection", _projection),
            every(
                "invoice-schedule",
                INVOICE_CHECK_SECONDS,
                leases.elected(leases.INVOICE_SCHEDULE, _issue_due_invoices),
            ),
            KEY_PRUNER,
        ],
        description=(
            "Usage metered from the event log (per minute, tenant, room, dispatch and meter), "
            "priced by versioned price books in integer cents, invoiced monthly, and auditable "
            "by replaying the raw stream."
        ),
    )
