"""Events of rooms, participants, tracks, egress and ingress, and the LiveKit webhook edge.

The webhook events carry the tenant's room name (not LiveKit's ``<tenant>~<room>``) and the
time LiveKit stamped on the webhook, so projections are deterministic under replay.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from shared.events.base import Event


class ParticipantJoined(Event, frozen=True, kw_only=True):
    """A participant joined a LiveKit room (from LiveKit's ``participant_joined`` webhook)."""

    TYPE: ClassVar[str] = "mediai.participant.joined.v1"
    PRODUCER: ClassVar[str] = "webhooks"
    room: str
    participant_sid: str
    identity: str
    # "standard", "agent", "egress", "ingress", "sip" (LiveKit's ParticipantInfo.Kind)
    kind: str = "standard"
    joined_at: datetime


class ParticipantLeft(Event, frozen=True, kw_only=True):
    """A participant left a LiveKit room (``participant_left`` or ``participant_connection_aborted``)."""

    TYPE: ClassVar[str] = "mediai.participant.left.v1"
    PRODUCER: ClassVar[str] = "webhooks"
    room: str
    participant_sid: str
    identity: str
    kind: str = "standard"
    left_at: datetime
    aborted: bool = False


class EgressStarted(Event, frozen=True, kw_only=True):
    """LiveKit started an egress (recording or stream) of a room."""

    TYPE: ClassVar[str] = "mediai.egress.started.v1"
    PRODUCER: ClassVar[str] = "webhooks"
    room: str
    egress_id: str
    started_at: datetime


class EgressEnded(Event, frozen=True, kw_only=True):
    """An egress ended (completed, failed or aborted)."""

    TYPE: ClassVar[str] = "mediai.egress.ended.v1"
    PRODUCER: ClassVar[str] = "webhooks"
    room: str
    egress_id: str
    started_at: datetime | None = None
    ended_at: datetime
    status: str


EVENTS: tuple[type[Event], ...] = (ParticipantJoined, ParticipantLeft, EgressStarted, EgressEnded)
