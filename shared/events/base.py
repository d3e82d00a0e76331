"""The CloudEvents 1.0 envelope and the base of every event's data."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar

import msgspec
import uuid6

# Which stream an event lives on decides its retention and who may read it.
EVENTS_STREAM = "events"  # the business log: kept as long as invoices must be
PHI_STREAM = "phi"  # personal health data (transcripts, clinical records): short retention
DEADLETTER_STREAM = "deadletter"  # events a consumer gave up on, for operators to replay


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """The data of an event. Subclasses set ``TYPE``, the stable CloudEvents type.

    ``TYPE`` is written by hand (``mediai.<aggregate>.<event>.v<N>``), never derived from the
    class name, so renaming a class never changes the wire format.
    """

    TYPE: ClassVar[str]
    # The service that publishes it (for docs/events.md).
    PRODUCER: ClassVar[str]
    STREAM: ClassVar[str] = EVENTS_STREAM


class Envelope(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A CloudEvents 1.0 structured-mode document, plus the ``tenant`` and ``traceparent``
    extensions."""

    id: str
    source: str
    type: str
    subject: str
    time: datetime
    tenant: str
    data: Event
    specversion: str
    datacontenttype: str
    # An absent extension is left out of the document rather than written as null.
    traceparent: str | None = None


def new_event_id() -> str:
    """A fresh UUIDv7: unique, and sortable by creation time."""
    return str(uuid6.uuid7())


def envelope(
    data: Event,
    *,
    source: str,
    tenant: str,
    subject: str,
    event_id: str | None = None,
    time: datetime | None = None,
    traceparent: str | None = None,
) -> Envelope:
    """Wrap ``data`` in its envelope; ``source`` is the producing service (``mediai/<service>``)."""
    return Envelope(
        id=event_id or new_event_id(),
        source=source,
        type=data.TYPE,
        subject=subject,
        time=time or datetime.now(UTC),
        tenant=tenant,
        data=data,
        specversion="1.0",
        datacontenttype="application/json",
        traceparent=traceparent,
    )
