"""Events of usage metering, invoices, audits and usage limits."""

from __future__ import annotations

from shared.events.base import Event

EVENTS: tuple[type[Event], ...] = ()
