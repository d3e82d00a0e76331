"""The schema of the system: every event type, and the one codec that reads and writes them.

Add a new event type to ``CURRENT``; a breaking change is a new ``.vN`` type with its old
version kept in ``LEGACY`` together with an upcaster (see docs/events.md).
"""

from __future__ import annotations

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
    TenantCreated,
    ApiKeyCreated,
    TokenIssued,
    DeadLettered,
)

CODEC = EventCodec(CURRENT)

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
