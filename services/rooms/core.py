"""The read model's rules, free of I/O: how each event changes a room, participant or track
row (egress and ingress rows: ``media_core``).

Every rule is idempotent and order-tolerant. A sid's life only moves forward (a room opens then
finishes, a participant joins then leaves), so "finished"/"left" is never undone by an older
event, and an event about a row not seen yet creates it (``participant_left`` before
``participant_joined`` leaves a row that stays "left"). Where several sources can close a row,
the more authoritative one wins: LiveKit's webhook over our API call over the reconciliation's
inference.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from msgspec.structs import replace

from shared.events.rooms import (
    ParticipantJoined,
    ParticipantLeft,
    RoomFinished,
    RoomStarted,
    TrackPublished,
    TrackUnpublished,
)
from shared.naming import SYSTEM_TENANT, livekit_room

# Who closed a row, weakest first: a stronger source may correct a weaker one's time.
WEBHOOK, API, RECONCILE = "webhook", "api", "reconcile"
_AUTHORITY = {"": 0, RECONCILE: 1, API: 2, WEBHOOK: 3}


def livekit_name(tenant: str, room: str) -> str:
    """The LiveKit room of a read-model room (a ``system`` room keeps LiveKit's own name)."""
    return room if tenant == SYSTEM_TENANT else livekit_room(tenant, room)


class RoomRow(msgspec.Struct, frozen=True, kw_only=True):
    sid: str
    tenant: str
    name: str
    livekit_name: str
    created_at: datetime | None = None
    finished_at: datetime | None = None
    end_reason: str = ""
    finished_by: str = ""
    empty_timeout: int = 0
    departure_timeout: int = 0
    max_participants: int = 0
    metadata: str = ""
    # Set by the store when loading; the rules never change it.
    updated_at: datetime | None = None


class ParticipantRow(msgspec.Struct, frozen=True, kw_only=True):
    sid: str
    room_sid: str
    tenant: str
    room: str
    identity: str
    name: str = ""
    kind: str = "standard"
    metadata: str = ""
    joined_at: datetime | None = None
    left_at: datetime | None = None
    aborted: bool = False
    disconnect_reason: str = ""
    left_by: str = ""
    updated_at: datetime | None = None


class TrackRow(msgspec.Struct, frozen=True, kw_only=True):
    sid: str
    participant_sid: str
    room_sid: str
    tenant: str
    type: str = ""
    source: str = "unknown"
    name: str = ""
    mime_type: str = ""
    muted: bool = False
    published_at: datetime | None = None
    unpublished_at: datetime | None = None
    updated_at: datetime | None = None


# --- rooms ------------------------------------------------------------------------------------


def room_seen(row: RoomRow | None, seen: RoomRow) -> RoomRow:
    """LiveKit showed the room alive (a ``room_started``, a create answer, a listing): take its
    settings; reopen it only if just the reconciliation had closed it."""
    base = row or seen
    reopen = base.finished_at is not None and base.finished_by == RECONCILE
    return replace(
        base,
        created_at=base.created_at or seen.created_at,
        empty_timeout=seen.empty_timeout,
        departure_timeout=seen.departure_timeout,
        max_participants=seen.max_participants,
        metadata=seen.metadata,
        **({"finished_at": None, "finished_by": "", "end_reason": ""} if reopen else {}),
    )


def room_implied(row: RoomRow | None, *, sid: str, tenant: str, name: str) -> RoomRow:
    """A participant or track in a room we have no row for (its ``room_started`` was dropped or
    is late) shows the room existed: record it as open, with what we know."""
    if row is not None:
        return row
    return RoomRow(sid=sid, tenant=tenant, name=name, livekit_name=livekit_name(tenant, name))


def finish_room(row: RoomRow, *, at: datetime, by: str, reason: str = "") -> RoomRow:
    """Close a room, unless a source at least as authoritative already did."""
    if row.finished_at is not None and _AUTHORITY[by] <= _AUTHORITY[row.finished_by]:
        return row
    return replace(row, finished_at=at, finished_by=by, end_reason=reason or row.end_reason)


def on_room_started(row: RoomRow | None, event: RoomStarted, tenant: str) -> RoomRow:
    seen = RoomRow(
        sid=event.room_sid,
        tenant=tenant,
        name=event.room,
        livekit_name=livekit_name(tenant, event.room),
        created_at=event.started_at,
        empty_timeout=event.empty_timeout,
        departure_timeout=event.departure_timeout,
        max_participants=event.max_participants,
        metadata=event.metadata,
    )
    return room_seen(row, seen)


def on_room_finished(row: RoomRow | None, event: RoomFinished, tenant: str) -> RoomRow:
    base = row or RoomRow(
        sid=event.room_sid,
        tenant=tenant,
        name=event.room,
        livekit_name=livekit_name(tenant, event.room),
        created_at=event.started_at,
    )
    return finish_room(base, at=event.finished_at, by=WEBHOOK, reason=event.end_reason)


# --- participants -----------------------------------------------------------------------------


def _fill(row: ParticipantRow, seen: ParticipantRow) -> ParticipantRow:
    return replace(
        row,
        room_sid=row.room_sid or seen.room_sid,
        identity=row.identity or seen.identity,
        name=row.name or seen.name,
        kind=seen.kind if row.kind == "standard" else row.kind,
        metadata=row.metadata or seen.metadata,
        joined_at=row.joined_at or seen.joined_at,
    )


def participant_seen(row: ParticipantRow | None, seen: ParticipantRow) -> ParticipantRow:
    """LiveKit lists the participant as present: fill what we lack. One only the
    reconciliation had marked gone is back; one LiveKit said left stays left."""
    if row is None:
        return seen
    filled = _fill(row, seen)
    if row.left_at is not None and row.left_by == RECONCILE:
        return replace(filled, left_at=None, left_by="")
    return filled


def leave(
    row: ParticipantRow, *, at: datetime, by: str, aborted: bool = False, reason: str = ""
) -> ParticipantRow:
    """Mark a participant gone, unless a source at least as authoritative already did."""
    if row.left_at is not None and _AUTHORITY[by] <= _AUTHORITY[row.left_by]:
        return row
    left_at = max(at, row.joined_at) if row.joined_at else at
    return replace(
        row,
        left_at=left_at,
        left_by=by,
        aborted=aborted,
        disconnect_reason=reason or row.disconnect_reason,
    )


def on_participant_joined(
    row: ParticipantRow | None, event: ParticipantJoined, tenant: str, room_sid: str
) -> ParticipantRow:
    """A join fills the row but never undoes a leave: whatever closed it came after the join."""
    seen = ParticipantRow(
        sid=event.participant_sid,
        room_sid=room_sid,
        tenant=tenant,
        room=event.room,
        identity=event.identity,
        name=event.name,
        kind=event.kind,
        metadata=event.metadata,
        joined_at=event.joined_at,
    )
    return seen if row is None else _fill(row, seen)


def on_participant_left(
    row: ParticipantRow | None, event: ParticipantLeft, tenant: str, room_sid: str
) -> ParticipantRow:
    base = row or ParticipantRow(
        sid=event.participant_sid,
        room_sid=room_sid,
        tenant=tenant,
        room=event.room,
        identity=event.identity,
        kind=event.kind,
        joined_at=event.joined_at,
    )
    if base.joined_at is None and event.joined_at is not None:
        base = replace(base, joined_at=event.joined_at)
    return leave(
        base, at=event.left_at, by=WEBHOOK, aborted=event.aborted, reason=event.disconnect_reason
    )


# --- tracks -----------------------------------------------------------------------------------


def track_seen(row: TrackRow | None, seen: TrackRow) -> TrackRow:
    """A track LiveKit showed published; an unpublished track never comes back (new sid)."""
    if row is None:
        return seen
    return replace(
        row,
        participant_sid=row.participant_sid or seen.participant_sid,
        room_sid=row.room_sid or seen.room_sid,
        type=seen.type or row.type,
        source=seen.source if seen.source != "unknown" else row.source,
        name=row.name or seen.name,
        mime_type=seen.mime_type or row.mime_type,
        muted=seen.muted,
        published_at=row.published_at or seen.published_at,
    )


def unpublish(row: TrackRow, *, at: datetime) -> TrackRow:
    return row if row.unpublished_at is not None else replace(row, unpublished_at=at)


def on_track_published(
    row: TrackRow | None, event: TrackPublished, tenant: str, room_sid: str
) -> TrackRow:
    seen = TrackRow(
        sid=event.track_sid,
        participant_sid=event.participant_sid,
        room_sid=room_sid,
        tenant=tenant,
        type=event.track_type,
        source=event.source,
        name=event.name,
        mime_type=event.mime_type,
        muted=event.muted,
        published_at=event.published_at,
    )
    return track_seen(row, seen)


def on_track_unpublished(
    row: TrackRow | None, event: TrackUnpublished, tenant: str, room_sid: str
) -> TrackRow:
    base = row or TrackRow(
        sid=event.track_sid,
        participant_sid=event.participant_sid,
        room_sid=room_sid,
        tenant=tenant,
        type=event.track_type,
        source=event.source,
    )
    return unpublish(base, at=event.unpublished_at)


def participant_from_track(event: TrackPublished, tenant: str, room_sid: str) -> ParticipantRow:
    """A publisher we have no row for (its join was dropped or is late) is present."""
    return ParticipantRow(
        sid=event.participant_sid,
        room_sid=room_sid,
        tenant=tenant,
        room=event.room,
        identity=event.identity,
    )
