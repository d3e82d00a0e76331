"""The reconciliation's decisions, free of I/O: compare the read model with what LiveKit lists
and plan the corrections that heal it after dropped webhooks.

The plan is a list of operations per room, not rows to write: the edge re-reads each row under
a lock and applies the operation through the same rules as the projection, so a webhook that
lands while the reconciliation runs is never overwritten by an older snapshot.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from services.rooms.core import (
    RECONCILE,
    ParticipantRow,
    RoomRow,
    TrackRow,
    participant_seen,
    room_seen,
    track_seen,
)
from shared.events.rooms import ReconciledParticipant, RoomReconciled


class LiveParticipant(msgspec.Struct, frozen=True, kw_only=True):
    row: ParticipantRow
    tracks: list[TrackRow] = msgspec.field(default_factory=list)


class LiveRoom(msgspec.Struct, frozen=True, kw_only=True):
    """A room as LiveKit lists it, with its participants and their published tracks."""

    row: RoomRow
    participants: list[LiveParticipant] = msgspec.field(default_factory=list)


class Model(msgspec.Struct, frozen=True, kw_only=True):
    """The read model's rows that matter: open rooms and rooms LiveKit lists, their present
    participants and those LiveKit lists, and the published tracks of those."""

    rooms: dict[str, RoomRow]
    participants: dict[str, ParticipantRow]
    tracks: dict[str, TrackRow]


class FinishRoom(msgspec.Struct, frozen=True, tag=True):
    sid: str
    at: datetime


class SeeRoom(msgspec.Struct, frozen=True, tag=True):
    row: RoomRow


class Leave(msgspec.Struct, frozen=True, tag=True):
    sid: str
    at: datetime


class SeeParticipant(msgspec.Struct, frozen=True, tag=True):
    row: ParticipantRow


class Unpublish(msgspec.Struct, frozen=True, tag=True):
    sid: str
    at: datetime


class SeeTrack(msgspec.Struct, frozen=True, tag=True):
    row: TrackRow


Operation = FinishRoom | SeeRoom | Leave | SeeParticipant | Unpublish | SeeTrack


class RoomPlan(msgspec.Struct, frozen=True, kw_only=True):
    room: RoomRow
    operations: list[Operation]
    room_gone: bool = False
    room_found: bool = False
    participants_gone: list[ParticipantRow] = msgspec.field(default_factory=list)
    participants_found: list[ParticipantRow] = msgspec.field(default_factory=list)


def _settled(row: RoomRow | ParticipantRow | TrackRow, settled_before: datetime) -> bool:
    # A row written after LiveKit was asked may describe something the listing predates.
    return row.updated_at is None or row.updated_at < settled_before


def _live_room(live: LiveRoom, model: Model, at: datetime, settled_before: datetime) -> RoomPlan:
    known = model.rooms.get(live.row.sid)
    operations: list[Operation] = []
    if known is None or room_seen(known, live.row) != known:
        operations.append(SeeRoom(live.row))
    found, listed = [], set()
    for participant in live.participants:
        listed.add(participant.row.sid)
        row = model.participants.get(participant.row.sid)
        if row is None or (row.left_at is not None and row.left_by == RECONCILE):
            found.append(participant.row)
        if row is None or participant_seen(row, participant.row) != row:
            operations.append(SeeParticipant(participant.row))
        published = {track.sid for track in participant.tracks}
        for track in participant.tracks:
            known_track = model.tracks.get(track.sid)
            if known_track is None or track_seen(known_track, track) != known_track:
                operations.append(SeeTrack(track))
        for stale in model.tracks.values():
            if (
                stale.participant_sid == participant.row.sid
                and stale.unpublished_at is None
                and stale.sid not in published
                and _settled(stale, settled_before)
            ):
                operations.append(Unpublish(stale.sid, at))
    gone = [
        p
        for p in model.participants.values()
        if p.room_sid == live.row.sid
        and p.left_at is None
        and p.sid not in listed
        and _settled(p, settled_before)
    ]
    operations += [Leave(p.sid, at) for p in gone]
    room_found = known is None or (known.finished_at is not None and known.finished_by == RECONCILE)
    return RoomPlan(
        room=known or live.row,
        operations=operations,
        room_found=room_found,
        participants_gone=gone,
        participants_found=found,
    )


def plan(
    model: Model, live: list[LiveRoom], *, observed_at: datetime, settled_before: datetime
) -> list[RoomPlan]:
    """The corrections that make the read model agree with LiveKit's listing taken at
    ``observed_at``; rows written since ``settled_before`` are left to their webhooks."""
    plans: list[RoomPlan] = []
    listed = {room.row.sid for room in live}
    for room in live:
        room_plan = _live_room(room, model, observed_at, settled_before)
        if room_plan.operations:
            plans.append(room_plan)
    for row in model.rooms.values():
        if row.sid in listed or row.finished_at is not None or not _settled(row, settled_before):
            continue
        gone = [
            p for p in model.participants.values() if p.room_sid == row.sid and p.left_at is None
        ]
        operations: list[Operation] = [FinishRoom(row.sid, observed_at)]
        operations += [Leave(p.sid, observed_at) for p in gone]
        plans.append(
            RoomPlan(room=row, operations=operations, room_gone=True, participants_gone=gone)
        )
    return plans


def _reference(row: ParticipantRow) -> ReconciledParticipant:
    return ReconciledParticipant(participant_sid=row.sid, identity=row.identity, kind=row.kind)


def reconciled_event(
    room_plan: RoomPlan, applied: set[Operation], observed_at: datetime
) -> RoomReconciled | None:
    """The event announcing what the plan actually changed (``applied``: the operations that
    changed a row), or None when it only refreshed details such as metadata or tracks."""
    left = {op.sid for op in applied if isinstance(op, Leave)}
    seen = {op.row.sid for op in applied if isinstance(op, SeeParticipant)}
    gone = [_reference(p) for p in room_plan.participants_gone if p.sid in left]
    found = [_reference(p) for p in room_plan.participants_found if p.sid in seen]
    room_gone = room_plan.room_gone and any(isinstance(op, FinishRoom) for op in applied)
    room_found = room_plan.room_found and any(isinstance(op, SeeRoom) for op in applied)
    if not (gone or found or room_gone or room_found):
        return None
    return RoomReconciled(
        room=room_plan.room.name,
        room_sid=room_plan.room.sid,
        observed_at=observed_at,
        room_gone=room_gone,
        room_found=room_found,
        participants_gone=gone,
        participants_found=found,
    )
