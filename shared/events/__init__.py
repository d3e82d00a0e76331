"""The schema of the system: every event type, and the one codec that reads and writes them.

Each module here lists its event types in ``EVENTS``; a breaking change is a new ``.vN`` type
with the old version kept in ``shared.events.legacy`` together with an upcaster (see
docs/events.md). Nothing is published that is not in ``CURRENT``.
"""

from __future__ import annotations

from shared.events import (
    agents,
    billing,
    clinical,
    legacy,
    patients,
    platform,
    reconciliation,
    rooms,
)
from shared.events.base import (
    DEADLETTER_STREAM,
    EVENTS_STREAM,
    PHI_STREAM,
    Envelope,
    Event,
    envelope,
    new_event_id,
)
from shared.events.codec import EventCodec, EventDecodeError
from shared.events.platform import ApiKeyCreated, DeadLettered, TenantCreated, TokenIssued

CURRENT: tuple[type[Event], ...] = (
    platform.EVENTS
    + rooms.EVENTS
    + reconciliation.EVENTS
    + agents.EVENTS
    + billing.EVENTS
    + clinical.EVENTS
    + patients.EVENTS
)

CODEC = EventCodec(CURRENT, legacy.LEGACY)

__all__ = [
    "CODEC",
    "CURRENT",
    "DEADLETTER_STREAM",
    "EVENTS_STREAM",
    "PHI_STREAM",
    "ApiKeyCreated",
    "DeadLettered",
    "Envelope",
    "Event",
    "EventCodec",
    "EventDecodeError",
    "TenantCreated",
    "TokenIssued",
    "envelope",
    "new_event_id",
]
