"""The read model's rules, free of I/O: how each event changes a room or participant row
(tracks: ``track_core``; egress and ingress: ``media_core``).

Every rule is idempotent and order-tolerant. A sid's life only moves forward (a room opens then
finishes, a participant joins then leaves), so "finished"/"left" is never undone by an older
event, and an event about a row not seen yet creates it (``participant_left`` before
``participant_joined`` leaves a row that stays "left"). Where several sources can close a row,
the more authoritative one wins whatever the order: LiveKit's webhook over our API call over the
reconciliation's presumption. Only a listing (a ``found`` event), which shows a thing alive now,
undoes a presumption; a webhook's past fact never reopens anything.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from msgspec.structs import replace

from shared.events.reconciliation import (
    ParticipantFound,
    ParticipantPresumedGone,
    RoomFound,
    RoomPresumedFinished,
)
from shared.events.rooms import (
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    RoomCreated,
    RoomFinished,
    RoomStarted,
    TrackPublished,
)
from shared.naming import SYSTEM_TENANT, livekit_room

# Who closed a row, weakest first: a stronger source may correct a weaker one's time.
WEBHOOK, API, RECONCILE = "webhook", "api", "reconcile"
_AUTHORITY = {"": 0, RECONCILE: 1, API: 2, WEBHOOK: 3}


def outranks(by: str, closed_by: str) -> bool:
    """Whether a close by ``by`` replaces one already made by ``closed_by``."""
    return _AUTHORITY[by] > _AUTHORITY[closed_by]


def earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    """The earlier of two known times of one start (sources may differ by their precision):
    the same whichever is learnt first."""
    return b if a is None else a if b is None else min(a, b)


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


# --- rooms ------------------------------------------------------------------------------------


def room_seen(row: RoomRow | None, seen: RoomRow, *, listed: bool = False) -> RoomRow:
    """LiveKit showed the room (a ``room_started``, a create answer, a listing): take its
    settings. A listing (``listed``) shows it alive now, so it also reopens a room that only a
    presumption had closed."""
    base = row or seen
    reopen = listed and base.finished_at is not None and base.finished_by == RECONCILE
    return replace(
        base,
        created_at=earliest(base.created_at, seen.created_at),
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
    """Close a room, unless a source at least as authoritative already did; a weaker source
    still gives the reason the stronger left out (LiveKit's ``room_finished`` after our delete
    names none), so the reason is the same whichever closes it first."""
    if row.finished_at is not None and not outranks(by, row.finished_by):
        return row if row.end_reason or not reason else replace(row, end_reason=reason)
    return replace(row, finished_at=at, finished_by=by, end_reason=reason or row.end_reason)


def _settings_of(
    event: RoomStarted | RoomCreated | RoomFound, tenant: str, created_at: datetime | None
) -> RoomRow:
    return RoomRow(
        sid=event.room_sid,
        tenant=tenant,
        name=event.room,
        livekit_name=livekit_name(tenant, event.room),
        created_at=created_at,
        empty_timeout=event.empty_timeout,
        departure_timeout=event.departure_timeout,
        max_participants=event.max_participants,
        metadata=event.metadata,
    )


def on_room_started(row: RoomRow | None, event: RoomStarted, tenant: str) -> RoomRow:
    return room_seen(row, _settings_of(event, tenant, event.started_at))


def on_room_created(row: RoomRow | None, event: RoomCreated, tenant: str) -> RoomRow:
    return room_seen(row, _settings_of(event, tenant, event.created_at))


def on_room_found(row: RoomRow | None, event: RoomFound, tenant: str) -> RoomRow:
    return room_seen(row, _settings_of(event, tenant, event.created_at), listed=True)


def on_room_finished(row: RoomRow | None, event: RoomFinished, tenant: str) -> RoomRow:
    base = row or RoomRow(
        sid=event.room_sid,
        tenant=tenant,
        name=event.room,
        livekit_name=livekit_name(tenant, event.room),
        created_at=event.started_at,
    )
    return finish_room(base, at=event.finished_at, by=WEBHOOK, reason=event.end_reason)


def on_room_deleted(
    row: RoomRow | None, *, sid: str, tenant: str, name: str, at: datetime
) -> RoomRow:
    """Our API deleted the room at ``at`` (the event's time); LiveKit's ``room_finished``
    gives the exact time later."""
    base = room_implied(row, sid=sid, tenant=tenant, name=name)
    return finish_room(base, at=at, by=API, reason="api_delete")


def on_room_presumed_finished(
    row: RoomRow | None, event: RoomPresumedFinished, tenant: str
) -> RoomRow:
    base = room_implied(row, sid=event.room_sid, tenant=tenant, name=event.room)
    return finish_room(base, at=event.last_seen_at, by=RECONCILE)


# --- participants -----------------------------------------------------------------------------


def _fill(row: ParticipantRow, seen: ParticipantRow) -> ParticipantRow:
    filled = replace(
        row,
        room_sid=row.room_sid or seen.room_sid,
        identity=row.identity or seen.identity,
        name=row.name or seen.name,
        kind=seen.kind if row.kind == "standard" else row.kind,
        metadata=row.metadata or seen.metadata,
        joined_at=earliest(row.joined_at, seen.joined_at),
    )
    return _left_after_join(filled)


def _left_after_join(row: ParticipantRow) -> ParticipantRow:
    # A leave learnt before the join (a presumption from a sighting in the join's second) is
    # never earlier than the join, whichever came first.
    if row.left_at is not None and row.joined_at is not None and row.left_at < row.joined_at:
        return replace(row, left_at=row.joined_at)
    return row


def participant_seen(row: ParticipantRow | None, seen: ParticipantRow) -> ParticipantRow:
    """LiveKit lists the participant as present: fill what we lack. One only a presumption
    had marked gone is back; one LiveKit said left stays left."""
    if row is None:
        return seen
    filled = _fill(row, seen)
    if row.left_at is not None and row.left_by == RECONCILE:
        return replace(filled, left_at=None, left_by="")
    return filled


def leave(
    row: ParticipantRow, *, at: datetime, by: str, aborted: bool = False, reason: str = ""
) -> ParticipantRow:
    """Mark a participant gone, unless a source at least as authoritative already did (a
    weaker one still gives a reason the stronger left out, as for rooms)."""
    if row.left_at is not None and not outranks(by, row.left_by):
        if row.disconnect_reason or not reason:
            return row
        return replace(row, disconnect_reason=reason)
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


def on_participant_found(
    row: ParticipantRow | None, event: ParticipantFound, tenant: str
) -> ParticipantRow:
    seen = ParticipantRow(
        sid=event.participant_sid,
        room_sid=event.room_sid,
        tenant=tenant,
        room=event.room,
        identity=event.identity,
        name=event.name,
        kind=event.kind,
        metadata=event.metadata,
        joined_at=event.joined_at,
    )
    return participant_seen(row, seen)


def _closing(
    row: ParticipantRow | None,
    event: ParticipantLeft | ParticipantPresumedGone,
    tenant: str,
    room_sid: str,
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
    return _left_after_join(replace(base, joined_at=earliest(base.joined_at, event.joined_at)))


def on_participant_left(
    row: ParticipantRow | None, event: ParticipantLeft, tenant: str, room_sid: str
) -> ParticipantRow:
    base = _closing(row, event, tenant, room_sid)
    return leave(
        base, at=event.left_at, by=WEBHOOK, aborted=event.aborted, reason=event.disconnect_reason
    )


def on_participant_presumed_gone(
    row: ParticipantRow | None, event: ParticipantPresumedGone, tenant: str
) -> ParticipantRow:
    """Gone since it was last seen; no reason is recorded, so a late webhook's reason (and
    time) replaces nothing of ours whichever arrives first."""
    base = _closing(row, event, tenant, event.room_sid)
    return leave(base, at=event.last_seen_at, by=RECONCILE)


def on_participant_updated(
    row: ParticipantRow | None, event: ParticipantUpdated, tenant: str, room_sid: str
) -> ParticipantRow:
    """Our API changed the name or metadata. A row not known yet (its join is late) is started
    with them, and the join then fills only the rest."""
    base = row or ParticipantRow(
        sid=event.participant_sid,
        room_sid=room_sid,
        tenant=tenant,
        room=event.room,
        identity=event.identity,
    )
    return replace(
        base,
        # LiveKit reads an empty value as "unchanged" (it cannot clear them), and so do we.
        name=event.name or base.name,
        metadata=event.metadata or base.metadata,
    )


def participant_from_track(event: TrackPublished, tenant: str, room_sid: str) -> ParticipantRow:
    """A publisher we have no row for (its join was dropped or is late) is present."""
    return ParticipantRow(
        sid=event.participant_sid,
        room_sid=room_sid,
        tenant=tenant,
        room=event.room,
        identity=event.identity,
    )
