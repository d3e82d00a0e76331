"""Pricing, free of I/O: which price book version is in force when, and lines in integer cents."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import NamedTuple

import msgspec

from services.billing.meters import Catalogue
from services.billing.periods import Period

DEFAULT_PLAN = "standard"


class PricingError(ValueError):
    """Usage cannot be priced (no price book in force, or books in different currencies)."""


class Price(NamedTuple):
    """``cents`` for every ``per`` base units of a meter."""

    cents: int
    per: int


class PriceBook(msgspec.Struct, frozen=True, kw_only=True):
    """One immutable version of a plan's prices."""

    plan: str
    version: int
    effective_from: datetime
    currency: str = "BRL"
    prices: dict[str, Price] = {}

    @property
    def label(self) -> str:
        return f"{self.plan}@{self.version}"


class PlanAssignment(NamedTuple):
    plan: str
    effective_from: datetime


class Segment(NamedTuple):
    """A stretch of time priced by one book."""

    start: datetime
    end: datetime
    book: PriceBook


class MeterTotal(NamedTuple):
    quantity: int
    first_sequence: int
    last_sequence: int


class Line(msgspec.Struct, frozen=True, kw_only=True):
    meter: str
    unit: str
    quantity: int
    unit_price_cents: int
    per: int
    amount_cents: int
    plan: str
    version: int
    first_sequence: int
    last_sequence: int


def book_in_force(books: Iterable[PriceBook], moment: datetime) -> PriceBook | None:
    """The version with the latest ``effective_from`` not after ``moment`` (higher version on a
    tie)."""
    candidates = [book for book in books if book.effective_from <= moment]
    return max(candidates, key=lambda b: (b.effective_from, b.version), default=None)


def plan_at(assignments: Iterable[PlanAssignment], moment: datetime) -> str:
    current = [a for a in assignments if a.effective_from <= moment]
    return max(current, key=lambda a: a.effective_from).plan if current else DEFAULT_PLAN


def segments(
    period: Period,
    assignments: Sequence[PlanAssignment],
    books: Sequence[PriceBook],
    what_if: PriceBook | None = None,
) -> list[Segment]:
    """Split ``period`` where the tenant's plan or its price book version changes."""
    if what_if is not None:
        return [Segment(period.start, period.end, what_if)]
    cuts = {period.start, period.end}
    for moment in [a.effective_from for a in assignments] + [b.effective_from for b in books]:
        if period.start < moment < period.end:
            cuts.add(moment)
    bounds = sorted(cuts)
    found: list[Segment] = []
    for start, end in itertools.pairwise(bounds):
        plan = plan_at(assignments, start)
        book = book_in_force([b for b in books if b.plan == plan], start)
        if book is None:
            raise PricingError(f"no price book of plan {plan!r} is in force at {start.isoformat()}")
        if found and found[-1].book == book:
            found[-1] = found[-1]._replace(end=end)
        else:
            found.append(Segment(start, end, book))
    return found


def amount_cents(quantity: int, price: Price) -> int:
    """``quantity × cents / per``, rounded half away from zero, in integer arithmetic."""
    numerator = abs(quantity) * price.cents
    rounded = (2 * numerator + price.per) // (2 * price.per)
    return rounded if quantity >= 0 else -rounded


def price_lines(
    totals: Sequence[tuple[Segment, dict[str, MeterTotal]]], catalogue: Catalogue
) -> list[Line]:
    """One line per (meter, price book version): the quantities of every segment priced by that
    version, added (or the largest, for ``max`` meters), then priced and rounded once."""
    merged: dict[tuple[str, str, int], tuple[PriceBook, MeterTotal]] = {}
    for segment, by_meter in totals:
        for meter, total in by_meter.items():
            key = (meter, segment.book.plan, segment.book.version)
            if key in merged:
                _, seen = merged[key]
                quantity = (
                    max(seen.quantity, total.quantity)
                    if catalogue.is_max(meter)
                    else seen.quantity + total.quantity
                )
                total = MeterTotal(
                    quantity,
                    min(seen.first_sequence, total.first_sequence),
                    max(seen.last_sequence, total.last_sequence),
                )
            merged[key] = (segment.book, total)
    lines = []
    for (meter, plan, version), (book, total) in sorted(merged.items()):
        if total.quantity == 0:
            continue
        # A meter the book does not price is shown at zero rather than hidden.
        price = book.prices.get(meter, Price(0, 1))
        lines.append(
            Line(
                meter=meter,
                unit=catalogue.unit(meter),
                quantity=total.quantity,
                unit_price_cents=price.cents,
                per=price.per,
                amount_cents=amount_cents(total.quantity, price),
                plan=plan,
                version=version,
                first_sequence=total.first_sequence,
                last_sequence=total.last_sequence,
            )
        )
    return lines


def currency(found: Sequence[Segment]) -> str:
    currencies = {segment.book.currency for segment in found}
    if len(currencies) > 1:
        raise PricingError(f"one period is priced in several currencies: {sorted(currencies)}")
    return currencies.pop() if currencies else "BRL"
