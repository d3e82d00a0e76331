"""Request and response bodies of the billing API (camelCase on the wire)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from services.billing.periods import BOUND
from shared.contract import documented

Cents = Annotated[int, msgspec.Meta(description="Integer cents of the currency")]


class UsageRow(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    group: str
    meter: str
    unit: str
    quantity: int


class UsageReport(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    start: datetime = msgspec.field(name="from")
    end: datetime = msgspec.field(name="to")
    group_by: str
    timezone: str
    rows: list[UsageRow]
    # Stays/egresses not closed yet: billed once both their ends are known.
    open_intervals: int


class InvoiceLine(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    meter: str
    unit: str
    quantity: int
    unit_price_cents: Cents
    per: int
    amount_cents: Cents
    price_plan: str
    price_version: int
    first_sequence: int
    last_sequence: int


class Invoice(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    id: str
    month: str
    status: Literal["draft", "issued"]
    period_start: datetime
    period_end: datetime
    currency: str
    total_cents: Cents
    lines: list[InvoiceLine]
    price_books: list[str]
    first_sequence: int
    last_sequence: int
    projected_through: int
    issued_at: datetime | None = None


class InvoiceSummary(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    id: str
    month: str
    status: Literal["draft", "issued"]
    currency: str
    total_cents: Cents
    issued_at: datetime | None = None


class InvoiceList(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    invoices: list[InvoiceSummary]


class LimitStatus(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    meter: str
    unit: str
    monthly_quantity: int | None
    quantity: int
    reached: list[int]


class LimitsReport(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    month: str
    period_start: datetime
    period_end: datetime
    limits: list[LimitStatus]
    # True while a 100% threshold is reached this month: the dispatcher refuses new dispatches.
    dispatch_blocked: bool


class AuditRequest(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True
):
    """An audit of the caller's usage from ``from`` to ``to`` (dates include their whole day in
    the billing time zone; ISO instants are exact, ``to`` excluded). ``pricePlan`` and
    ``priceVersion`` choose one price book for a what-if; without them the versions in force
    price it."""

    start: Annotated[
        str, msgspec.Meta(examples=["2026-01-01"], extra_json_schema=documented(**BOUND))
    ] = msgspec.field(name="from")
    end: Annotated[
        str, msgspec.Meta(examples=["2026-01-31"], extra_json_schema=documented(**BOUND))
    ] = msgspec.field(name="to")
    price_plan: str | None = None
    price_version: int | None = None


class AuditMeter(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    meter: str
    unit: str
    replayed_quantity: int
    live_quantity: int
    quantity_difference: int
    replayed_cents: Cents
    live_cents: Cents
    cents_difference: Cents


class AuditInvoiceMeter(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    meter: str
    invoiced_cents: Cents
    replayed_cents: Cents
    difference_cents: Cents


class AuditInvoice(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    id: str
    month: str
    invoiced_cents: Cents
    replayed_cents: Cents
    difference_cents: Cents
    meters: list[AuditInvoiceMeter]


class RowDifference(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    window_start: datetime
    meter: str
    room: str
    dispatch: str
    replayed: int
    live: int


class ReplaySummary(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    events: int
    applied: int
    duplicates: int
    rejected: int
    undecodable: int
    first_sequence: int
    last_sequence: int
    read_until: int


class AuditReport(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    id: str
    tenant: str
    period_start: datetime
    period_end: datetime
    mode: Literal["in_force", "what_if"]
    price_book: str
    currency: str
    replay: ReplaySummary
    live_projected_through: int
    meters: list[AuditMeter]
    replayed_cents: Cents
    live_cents: Cents
    invoices: list[AuditInvoice]
    invoiced_cents: Cents | None
    row_differences: list[RowDifference]
    row_difference_count: int
    matches: bool
    seconds: float
