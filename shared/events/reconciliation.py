"""What the rooms service's reconciliation found when it compared its read model with LiveKit.

LiveKit gives webhooks no delivery guarantee, so the reconciliation lists LiveKit every so often
and publishes each disagreement as an event: something the read model shows but LiveKit no
longer has is *presumed* gone (it left at some time after it was last seen, unknown), something
LiveKit has that the read model lacks or shows otherwise is *found*. Every projection folds them
(the rooms read model, billing); the reconciliation writes no read-model row itself.

Their ids are fixed by what was observed (uuid5 of the kind, the sid and the last sighting, or
of what was listed against what the model held), so the same finding made by two replicas or two
passes is one event.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

import msgspec

from shared.events.base import Event
from shared.events.privacy import Personal, Plain, Pseudonym


class RoomFound(Event, frozen=True, kw_only=True):
    """LiveKit lists a room the read model lacks, shows finished only by a presumption, or
    shows with other settings (its ``room_started`` was dropped, or it changed since)."""

    TYPE: ClassVar[str] = "mediai.room.found.v1"
    PRODUCER: ClassVar[str] = "rooms"
    room: Pseudonym
    room_sid: Plain
    observed_at: datetime
    created_at: datetime | None = None
    empty_timeout: int = 0
    departure_timeout: int = 0
    max_participants: int = 0
    metadata: Personal = ""


class RoomPresumedFinished(Event, frozen=True, kw_only=True):
    """The read model shows a room open that LiveKit no longer lists: it finished at some time
    between ``last_seen_at`` (the last listing that had it, in whole seconds) and
    ``observed_at``, and its ``room_finished`` never arrived. Closed at ``last_seen_at``; a late
    ``mediai.room.finished`` corrects the time."""

    TYPE: ClassVar[str] = "mediai.room.presumed_finished.v1"
    PRODUCER: ClassVar[str] = "rooms"
    room: Pseudonym
    room_sid: Plain
    last_seen_at: datetime
    observed_at: datetime


class ParticipantFound(Event, frozen=True, kw_only=True):
    """LiveKit lists a participant the read model lacks, shows gone only by a presumption, or
    knows less about (its ``participant_joined`` was dropped). ``patient_ref`` is, as in
    ``ParticipantJoined``, the patient the participant's token names ("" for anyone else)."""

    TYPE: ClassVar[str] = "mediai.participant.found.v1"
    PRODUCER: ClassVar[str] = "rooms"
    room: Pseudonym
    room_sid: Plain
    participant_sid: Plain
    identity: Pseudonym
    kind: Plain = "standard"
    observed_at: datetime
    joined_at: datetime | None = None
    name: Personal = ""
    metadata: Personal = ""
    patient_ref: Pseudonym = ""


class ParticipantPresumedGone(Event, frozen=True, kw_only=True):
    """The read model shows a participant present that LiveKit no longer lists: it left at some
    time between ``last_seen_at`` and ``observed_at``, and its ``participant_left`` never
    arrived.

    ``last_seen_at`` is the last time it is known to have been there (the last listing that had
    it, in whole seconds, or its join when no listing did): billing ends its stay there, since
    nothing shows it stayed longer, and a late ``mediai.participant.left`` (always at or after
    it) replaces that end rather than adding a second one. ``joined_at`` is its join as the read
    model knew it, so a lost join still bills."""

    TYPE: ClassVar[str] = "mediai.participant.presumed_gone.v1"
    PRODUCER: ClassVar[str] = "rooms"
    room: Pseudonym
    room_sid: Plain
    participant_sid: Plain
    identity: Pseudonym
    kind: Plain = "standard"
    joined_at: datetime | None = None
    last_seen_at: datetime
    observed_at: datetime


class TrackFound(Event, frozen=True, kw_only=True):
    """LiveKit lists a published track the read model lacks or shows otherwise (muted, say)."""

    TYPE: ClassVar[str] = "mediai.track.found.v1"
    PRODUCER: ClassVar[str] = "rooms"
    room: Pseudonym
    room_sid: Plain
    participant_sid: Plain
    identity: Pseudonym
    track_sid: Plain
    track_type: Plain = ""
    source: Plain = "unknown"
    name: Personal = ""
    mime_type: Plain = ""
    muted: bool = False
    observed_at: datetime


class TrackPresumedUnpublished(Event, frozen=True, kw_only=True):
    """The read model shows a track published that LiveKit no longer lists (it, or its owner,
    went): unpublished at some time between ``last_seen_at`` and ``observed_at``."""

    TYPE: ClassVar[str] = "mediai.track.presumed_unpublished.v1"
    PRODUCER: ClassVar[str] = "rooms"
    room: Pseudonym
    room_sid: Plain
    participant_sid: Plain
    identity: Pseudonym
    track_sid: Plain
    last_seen_at: datetime
    observed_at: datetime


class ReconciledParticipant(msgspec.Struct, frozen=True, kw_only=True):
    """A participant whose presence the reconciliation corrected."""

    participant_sid: Plain
    identity: Pseudonym
    kind: Plain = "standard"


class RoomReconciled(Event, frozen=True, kw_only=True):
    """No longer published: the events above replaced it. Old logs hold it, so it stays
    readable; the read model folds its "gone" parts at ``observed_at``, as the reconciliation
    of that time did (billing never metered it, and an audit of those months still does not).

    The rooms service found its read model out of step with LiveKit and corrected it.
    ``participants_gone`` were shown as present but LiveKit no longer listed them,
    ``participants_found`` were present in LiveKit without a ``mediai.participant.joined``,
    ``room_gone`` means the room itself no longer existed in LiveKit.
    """

    TYPE: ClassVar[str] = "mediai.room.reconciled.v1"
    PRODUCER: ClassVar[str] = "rooms"
    room: Pseudonym
    room_sid: Plain
    observed_at: datetime
    room_gone: bool = False
    room_found: bool = False
    participants_gone: list[ReconciledParticipant] = msgspec.field(default_factory=list)
    participants_found: list[ReconciledParticipant] = msgspec.field(default_factory=list)


EVENTS: tuple[type[Event], ...] = (
    RoomFound,
    RoomPresumedFinished,
    ParticipantFound,
    ParticipantPresumedGone,
    TrackFound,
    TrackPresumedUnpublished,
    RoomReconciled,
)
