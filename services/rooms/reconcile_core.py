"""The reconciliation's decisions, free of I/O: compare the read model with what LiveKit lists
and decide what to publish about the webhooks it missed (``shared.events.reconciliation``).

It decides events, not rows: the projection folds them like any other, so the read model keeps
one writer and can be rebuilt from the log. A finding is published only when folding it would
change the row as it is, so once folded it is not found again; its id is fixed by what was
observed, so the same finding made twice (two replicas, or a pass before the projection caught
up) is one event.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime
from typing import NamedTuple

import msgspec
from msgspec.structs import replace

from services.rooms import core, track_core
from services.rooms.core import ParticipantRow, RoomRow
from services.rooms.track_core import TrackRow
from shared.events import Event
from shared.events.reconciliation import (
    ParticipantFound,
    ParticipantPresumedGone,
    RoomFound,
    RoomPresumedFinished,
    TrackFound,
    TrackPresumedUnpublished,
)

_IDS = uuid.UUID("6c1f3f0e-5b7a-4d2e-9a51-0f3c2b7d8e41")


class LiveParticipant(msgspec.Struct, frozen=True, kw_only=True):
    row: ParticipantRow
    tracks: list[TrackRow] = msgspec.field(default_factory=list)
    # The patient its token names (shared.participants.patient_ref_of), "" for anyone else.
    patient_ref: str = ""


class LiveRoom(msgspec.Struct, frozen=True, kw_only=True):
    """A room as LiveKit lists it, with its participants and their published tracks."""

    row: RoomRow
    participants: list[LiveParticipant] = msgspec.field(default_factory=list)


class Model(msgspec.Struct, frozen=True, kw_only=True):
    """The read model's rows that matter: open rooms, present participants and published
    tracks, plus every row LiveKit lists (and the owners of those tracks, for their names)."""

    rooms: dict[str, RoomRow]
    participants: dict[str, ParticipantRow]
    tracks: dict[str, TrackRow]


class Finding(NamedTuple):
    """An event to publish, with its deterministic id, tenant and subject."""

    event: Event
    event_id: str
    tenant: str
    key: str


def whole_second(moment: datetime) -> datetime:
    """LiveKit stamps webhooks in whole seconds (rounded down): a sighting rounded down too is
    never later than the webhook of what happened after it."""
    return moment.replace(microsecond=0)


def _id(kind: str, *parts: object) -> str:
    return str(uuid.uuid5(_IDS, f"{kind}:" + ":".join(str(p) for p in parts)))


def _state_id(kind: str, sid: str, listed: msgspec.Struct, known: msgspec.Struct | None) -> str:
    # The same listing of the same row is the same finding, whenever and by whom it is made.
    digest = hashlib.sha256(msgspec.json.encode([listed, known])).hexdigest()
    return _id(kind, sid, digest)


def _last_seen(
    sid: str, sightings: dict[str, datetime], observed_at: datetime, *known: datetime | None
) -> datetime:
    """The last time it is known to have been there: its last listing, or the event that
    brought it (a join, a publish, a creation); the observation itself if nothing tells."""
    times = [t for t in (sightings.get(sid), *known) if t is not None]
    return max(times) if times else whole_second(observed_at)


def _settled(row: RoomRow | ParticipantRow | TrackRow, settled_before: datetime) -> bool:
    # A row written after LiveKit was asked may describe something the listing predates.
    return row.updated_at is None or row.updated_at < settled_before


def _new(started: datetime | None, settled_before: datetime) -> bool:
    # Started after the listing's settle horizon: its webhook may simply not be projected yet.
    return started is not None and started >= settled_before


def _found(
    live: list[LiveRoom], model: Model, observed_at: datetime, settled_before: datetime
) -> list[Finding]:
    findings = []
    for room in live:
        seen, known = room.row, model.rooms.get(room.row.sid)
        found_room = RoomFound(
            room=seen.name,
            room_sid=seen.sid,
            observed_at=observed_at,
            created_at=seen.created_at,
            empty_timeout=seen.empty_timeout,
            departure_timeout=seen.departure_timeout,
            max_participants=seen.max_participants,
            metadata=seen.metadata,
        )
        changes = known is None or core.on_room_found(known, found_room, seen.tenant) != known
        if changes and not _new(seen.created_at, settled_before):
            event_id = _state_id("room-found", seen.sid, seen, known)
            findings.append(Finding(found_room, event_id, seen.tenant, seen.name))
        for participant in room.participants:
            if not _new(participant.row.joined_at, settled_before):
                findings += _participant_found(participant, model, observed_at)
    return findings


def _participant_found(live: LiveParticipant, model: Model, observed_at: datetime) -> list[Finding]:
    findings = []
    seen, known = live.row, model.participants.get(live.row.sid)
    found = ParticipantFound(
        room=seen.room,
        room_sid=seen.room_sid,
        participant_sid=seen.sid,
        identity=seen.identity,
        kind=seen.kind,
        observed_at=observed_at,
        joined_at=seen.joined_at,
        name=seen.name,
        metadata=seen.metadata,
        patient_ref=live.patient_ref,
    )
    if known is None or core.on_participant_found(known, found, seen.tenant) != known:
        event_id = _state_id("participant-found", seen.sid, seen, known)
        findings.append(Finding(found, event_id, seen.tenant, seen.room))
    for track in live.tracks:
        known_track = model.tracks.get(track.sid)
        found_track = TrackFound(
            room=seen.room,
            room_sid=seen.room_sid,
            participant_sid=seen.sid,
            identity=seen.identity,
            track_sid=track.sid,
            track_type=track.type,
            source=track.source,
            name=track.name,
            mime_type=track.mime_type,
            muted=track.muted,
            observed_at=observed_at,
        )
        if known_track is None or _changes(known_track, found_track, seen.tenant):
            event_id = _state_id("track-found", track.sid, track, known_track)
            findings.append(Finding(found_track, event_id, seen.tenant, seen.room))
    return findings


def _changes(known: TrackRow, found: TrackFound, tenant: str) -> bool:
    # A listing that agrees with the row only refreshes when its mute state was last known:
    # not worth an event every pass.
    after = track_core.on_track_found(known, found, tenant)
    return replace(after, muted_at=known.muted_at) != known


def _presumed(
    live: list[LiveRoom],
    model: Model,
    sightings: dict[str, datetime],
    observed_at: datetime,
    settled_before: datetime,
) -> list[Finding]:
    rooms = {room.row.sid for room in live}
    participants = {p.row.sid for room in live for p in room.participants}
    tracks = {t.sid for room in live for p in room.participants for t in p.tracks}
    findings = []
    for track in model.tracks.values():
        if (
            track.unpublished_at is None
            and track.sid not in tracks
            and _settled(track, settled_before)
        ):
            findings.append(_track_gone(track, model, sightings, observed_at))
    for row in model.participants.values():
        if row.left_at is None and row.sid not in participants and _settled(row, settled_before):
            last_seen = _last_seen(row.sid, sightings, observed_at, row.joined_at)
            gone = ParticipantPresumedGone(
                room=row.room,
                room_sid=row.room_sid,
                participant_sid=row.sid,
                identity=row.identity,
                kind=row.kind,
                joined_at=row.joined_at,
                last_seen_at=last_seen,
                observed_at=observed_at,
            )
            event_id = _id("participant-gone", row.sid, last_seen.isoformat())
            findings.append(Finding(gone, event_id, row.tenant, row.room))
    for room in model.rooms.values():
        if room.finished_at is None and room.sid not in rooms and _settled(room, settled_before):
            last_seen = _last_seen(room.sid, sightings, observed_at, room.created_at)
            finished = RoomPresumedFinished(
                room=room.name, room_sid=room.sid, last_seen_at=last_seen, observed_at=observed_at
            )
            event_id = _id("room-finished", room.sid, last_seen.isoformat())
            findings.append(Finding(finished, event_id, room.tenant, room.name))
    return findings


def _track_gone(
    track: TrackRow, model: Model, sightings: dict[str, datetime], observed_at: datetime
) -> Finding:
    owner = model.participants.get(track.participant_sid)
    room = model.rooms.get(track.room_sid)
    name = owner.room if owner else room.name if room else ""
    last_seen = _last_seen(track.sid, sightings, observed_at, track.published_at)
    gone = TrackPresumedUnpublished(
        room=name,
        room_sid=track.room_sid,
        participant_sid=track.participant_sid,
        identity=owner.identity if owner else "",
        track_sid=track.sid,
        last_seen_at=last_seen,
        observed_at=observed_at,
    )
    event_id = _id("track-gone", track.sid, last_seen.isoformat())
    return Finding(gone, event_id, track.tenant, name)


def plan(
    model: Model,
    live: list[LiveRoom],
    sightings: dict[str, datetime],
    *,
    observed_at: datetime,
    settled_before: datetime,
) -> list[Finding]:
    """What to publish so the read model agrees with LiveKit's listing taken at
    ``observed_at``: what it lists that the model lacks (found), then what the model shows that
    it no longer lists (presumed gone since its last sighting in ``sightings``). Rows written,
    and rooms or participants LiveKit started, since ``settled_before`` are left to their
    webhooks."""
    return _found(live, model, observed_at, settled_before) + _presumed(
        live, model, sightings, observed_at, settled_before
    )


def listed_sids(live: list[LiveRoom]) -> list[str]:
    """Every sid a listing shows: the sightings to remember."""
    sids = []
    for room in live:
        sids.append(room.row.sid)
        for participant in room.participants:
            sids.append(participant.row.sid)
            sids += [track.sid for track in participant.tracks]
    return sids
