"""Audit comparisons, free of I/O: replayed usage against the live projection and invoices."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from services.billing.meters import Catalogue
from services.billing.pricing import Line, MeterTotal
from services.billing.schemas import (
    AuditInvoice,
    AuditInvoiceMeter,
    AuditMeter,
    Invoice,
    InvoiceLine,
)


def cents_by_meter(lines: Iterable[Line | InvoiceLine]) -> dict[str, int]:
    found: dict[str, int] = {}
    for line in lines:
        found[line.meter] = found.get(line.meter, 0) + line.amount_cents
    return found


def compare_meters(
    replayed: Mapping[str, MeterTotal],
    live: Mapping[str, MeterTotal],
    replayed_lines: Sequence[Line],
    live_lines: Sequence[Line],
    catalogue: Catalogue,
) -> list[AuditMeter]:
    """Meter by meter: quantities and cents (both priced the same way) and their differences
    (replayed − live: positive means the live projection is missing usage)."""
    replayed_cents, live_cents = cents_by_meter(replayed_lines), cents_by_meter(live_lines)
    meters = sorted(set(replayed) | set(live) | set(replayed_cents) | set(live_cents))
    rows = []
    for meter in meters:
        quantity_replayed = replayed[meter].quantity if meter in replayed else 0
        quantity_live = live[meter].quantity if meter in live else 0
        cents_replayed, cents_live = replayed_cents.get(meter, 0), live_cents.get(meter, 0)
        if quantity_replayed == quantity_live == 0 and cents_replayed == cents_live == 0:
            continue
        rows.append(
            AuditMeter(
                meter=meter,
                unit=catalogue.unit(meter),
                replayed_quantity=quantity_replayed,
                live_quantity=quantity_live,
                quantity_difference=quantity_replayed - quantity_live,
                replayed_cents=cents_replayed,
                live_cents=cents_live,
                cents_difference=cents_replayed - cents_live,
            )
        )
    return rows


def compare_invoice(invoice: Invoice, replayed_lines: Sequence[Line]) -> AuditInvoice:
    """An issued invoice against the same month replayed (difference = replayed − invoiced)."""
    invoiced, replayed = cents_by_meter(invoice.lines), cents_by_meter(replayed_lines)
    meters = [
        AuditInvoiceMeter(
            meter=meter,
            invoiced_cents=invoiced.get(meter, 0),
            replayed_cents=replayed.get(meter, 0),
            difference_cents=replayed.get(meter, 0) - invoiced.get(meter, 0),
        )
        for meter in sorted(set(invoiced) | set(replayed))
    ]
    total_replayed = sum(replayed.values())
    return AuditInvoice(
        id=invoice.id,
        month=invoice.month,
        invoiced_cents=invoice.total_cents,
        replayed_cents=total_replayed,
        difference_cents=total_replayed - invoice.total_cents,
        meters=meters,
    )


def differing_meters(meters: Iterable[AuditMeter], invoices: Iterable[AuditInvoice]) -> list[str]:
    found = {m.meter for m in meters if m.quantity_difference or m.cents_difference}
    for invoice in invoices:
        found |= {m.meter for m in invoice.meters if m.difference_cents}
    return sorted(found)
