"""Events of usage metering, invoices, audits and usage limits.

Money is always integer cents (``*_cents``) in ``currency`` (ISO 4217, BRL by default); usage
quantities are integers in their meter's base unit (``token``, ``character``, ``millisecond``,
``session``; see docs/billing.md). A billing month is a calendar month in the billing time zone
(``MEDIAI_BILLING_TIMEZONE``), carried as the instants ``period_start``/``period_end``
(``[start, end)``) so consumers never need the time zone.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

import msgspec

from shared.events.base import Event
from shared.events.privacy import Plain


class MeterPrice(msgspec.Struct, frozen=True, kw_only=True):
    """The price of one meter: ``cents`` for every ``per`` base units (e.g. 150 per 1000000
    tokens, 2 per 60000 milliseconds = R$0,02 a minute)."""

    meter: Plain
    cents: int
    per: int


class PriceBookPublished(Event, frozen=True, kw_only=True):
    """A new version of a plan's price book (``mediai billing prices publish``).

    Versions are immutable: changing a price publishes ``version + 1``. At any instant the
    version in force for a plan is the one with the latest ``effective_from`` not after it (the
    higher version on a tie); invoice lines name the version that priced them. Keyed by plan.
    """

    TYPE: ClassVar[str] = "mediai.price_book.published.v1"
    PRODUCER: ClassVar[str] = "billing"
    plan: Plain
    version: int
    effective_from: datetime
    currency: Plain = "BRL"
    prices: list[MeterPrice] = msgspec.field(default_factory=list)
    note: Plain = ""


class PlanAssigned(Event, frozen=True, kw_only=True):
    """A tenant's usage is priced by ``plan`` from ``effective_from`` on (a tenant with no
    assignment is on the ``standard`` plan). Keyed by tenant id."""

    TYPE: ClassVar[str] = "mediai.plan.assigned.v1"
    PRODUCER: ClassVar[str] = "billing"
    plan: Plain
    effective_from: datetime


class InvoiceIssued(Event, frozen=True, kw_only=True):
    """A tenant's monthly invoice was issued and frozen. Keyed by invoice id.

    ``first_sequence``..``last_sequence`` is the range of MEDIAI_EVENTS stream sequences whose
    events produced the usage it bills (an audit replays them); ``price_books`` lists the
    ``plan@version`` that priced its lines.
    """

    TYPE: ClassVar[str] = "mediai.invoice.issued.v1"
    PRODUCER: ClassVar[str] = "billing"
    invoice_id: Plain
    month: Plain
    period_start: datetime
    period_end: datetime
    currency: Plain = "BRL"
    total_cents: int
    lines: int = 0
    price_books: list[Plain] = msgspec.field(default_factory=list)
    first_sequence: int = 0
    last_sequence: int = 0


class AuditCompleted(Event, frozen=True, kw_only=True):
    """An audit by replay finished (``POST /v1/audits``, ``mediai billing audit``). Keyed by
    audit id; the whole report is at ``GET /v1/audits/{audit_id}``.

    The tenant's usage events were replayed from the raw stream (sequences
    ``first_sequence``..``last_sequence``) into a separate table and priced with the versions in
    force (``mode`` ``in_force``) or with one chosen version (``what_if``, ``price_book`` =
    ``plan@version``). ``replayed_cents`` / ``live_cents`` / ``invoiced_cents`` are totals of the
    replay, of the live projection (same prices) and of the issued invoices inside the period;
    ``meters_differing`` names each meter whose quantity or cents differ. ``matches`` is true
    when nothing differs.
    """

    TYPE: ClassVar[str] = "mediai.audit.completed.v1"
    PRODUCER: ClassVar[str] = "billing"
    audit_id: Plain
    period_start: datetime
    period_end: datetime
    mode: Plain = "in_force"
    price_book: Plain = ""
    replayed_events: int = 0
    first_sequence: int = 0
    last_sequence: int = 0
    currency: Plain = "BRL"
    replayed_cents: int = 0
    live_cents: int = 0
    invoiced_cents: int | None = None
    meters_differing: list[Plain] = msgspec.field(default_factory=list)
    matches: bool = True


class UsageLimitSet(Event, frozen=True, kw_only=True):
    """A tenant's monthly cap on one meter was set (``monthly_quantity`` in the meter's base
    unit) or removed (``None``). Keyed by meter. Crossing 80% and 100% of it emits
    ``UsageLimitReached``."""

    TYPE: ClassVar[str] = "mediai.usage_limit.set.v1"
    PRODUCER: ClassVar[str] = "billing"
    meter: Plain
    monthly_quantity: int | None = None


class UsageLimitReached(Event, frozen=True, kw_only=True):
    """A tenant's usage of ``meter`` in the billing month ``[period_start, period_end)`` reached
    ``threshold_percent`` (80 or 100) of its monthly cap. Keyed by meter.

    The dispatcher must refuse new dispatches of this tenant (``POST /v1/agents`` → 402,
    error code ``usage_limit_reached``, naming the meter and the end of the period) while a
    ``threshold_percent == 100`` notice is in force: it was received, no later
    ``UsageLimitCleared`` for the same (tenant, meter, period_start, threshold 100) came after
    it (compare ``revision``: the higher one wins, whatever the delivery order), and the
    dispatcher's clock is inside ``[period_start, period_end)``. A new month starts clear.
    80% is a warning only. Billing keeps the same state at ``GET /v1/usage/limits``.
    """

    TYPE: ClassVar[str] = "mediai.usage_limit.reached.v1"
    PRODUCER: ClassVar[str] = "billing"
    meter: Plain
    threshold_percent: int
    monthly_quantity: int
    quantity: int
    month: Plain
    period_start: datetime
    period_end: datetime
    # Increases with each reached/cleared change of (tenant, meter, period_start, threshold).
    revision: int = 1


class UsageLimitCleared(Event, frozen=True, kw_only=True):
    """A reached threshold no longer holds for ``[period_start, period_end)``: the cap was
    raised or removed, or a correction lowered the usage. Keyed by meter. The dispatcher lifts
    the refusal for that (tenant, meter, period) when ``threshold_percent == 100`` and this
    ``revision`` is higher than the notice's."""

    TYPE: ClassVar[str] = "mediai.usage_limit.cleared.v1"
    PRODUCER: ClassVar[str] = "billing"
    meter: Plain
    threshold_percent: int
    monthly_quantity: int | None = None
    quantity: int
    month: Plain
    period_start: datetime
    period_end: datetime
    revision: int = 1


EVENTS: tuple[type[Event], ...] = (
    PriceBookPublished,
    PlanAssigned,
    InvoiceIssued,
    AuditCompleted,
    UsageLimitSet,
    UsageLimitReached,
    UsageLimitCleared,
)
