"""The read model's projection: webhook events in, rows out, each event applied once."""

from __future__ import annotations

import asyncpg

from services.rooms import core, media_core, store
from services.rooms.core import ParticipantRow, RoomRow, TrackRow
from services.rooms.media_core import EgressRow, IngressRow
from shared.bus import ConsumerSpec, Delivery, Handler
from shared.db import Connection, projection
from shared.events import Envelope, Event
from shared.events.rooms import (
    EgressEnded,
    EgressStarted,
    EgressUpdated,
    IngressEnded,
    IngressStarted,
    ParticipantJoined,
    ParticipantLeft,
    RoomFinished,
    RoomStarted,
    TrackPublished,
    TrackUnpublished,
)

READ_MODEL = ConsumerSpec(
    durable="rooms-read-model",
    events=(
        RoomStarted,
        RoomFinished,
        ParticipantJoined,
        ParticipantLeft,
        TrackPublished,
        TrackUnpublished,
        EgressStarted,
        EgressUpdated,
        EgressEnded,
        IngressStarted,
        IngressEnded,
    ),
)


async def _room_sid(conn: Connection, tenant: str, room: str, sid: str) -> str:
    """The event's room instance; events from before ``room_sid`` existed name only the room."""
    if sid:
        row = await store.load(conn, RoomRow, sid)
        await store.change(conn, row, core.room_implied(row, sid=sid, tenant=tenant, name=room))
        return sid
    open_room = await store.open_room(conn, tenant, room)
    return open_room.sid if open_room else ""


async def apply(conn: Connection, tenant: str, data: Event) -> None:
    """Apply one event to the read model (inside the projection's transaction)."""
    if isinstance(data, RoomStarted):
        room = await store.load(conn, RoomRow, data.room_sid)
        await store.change(conn, room, core.on_room_started(room, data, tenant))
    elif isinstance(data, RoomFinished):
        room = await store.load(conn, RoomRow, data.room_sid)
        await store.change(conn, room, core.on_room_finished(room, data, tenant))
    elif isinstance(data, ParticipantJoined | ParticipantLeft):
        room_sid = await _room_sid(conn, tenant, data.room, data.room_sid)
        participant = await store.load(conn, ParticipantRow, data.participant_sid)
        after = (
            core.on_participant_joined(participant, data, tenant, room_sid)
            if isinstance(data, ParticipantJoined)
            else core.on_participant_left(participant, data, tenant, room_sid)
        )
        await store.change(conn, participant, after)
    elif isinstance(data, TrackPublished):
        room_sid = await _room_sid(conn, tenant, data.room, data.room_sid)
        participant = await store.load(conn, ParticipantRow, data.participant_sid)
        if participant is None:
            await store.save(conn, core.participant_from_track(data, tenant, room_sid))
        track = await store.load(conn, TrackRow, data.track_sid)
        await store.change(conn, track, core.on_track_published(track, data, tenant, room_sid))
    elif isinstance(data, TrackUnpublished):
        room_sid = data.room_sid or await _room_sid(conn, tenant, data.room, "")
        track = await store.load(conn, TrackRow, data.track_sid)
        await store.change(conn, track, core.on_track_unpublished(track, data, tenant, room_sid))
    elif isinstance(data, EgressStarted | EgressUpdated | EgressEnded):
        egress = await store.load(conn, EgressRow, data.egress_id)
        await store.change(conn, egress, media_core.on_egress_event(egress, data, tenant))
    elif isinstance(data, IngressStarted | IngressEnded):
        ingress = await store.load(conn, IngressRow, data.ingress_id)
        await store.change(conn, ingress, media_core.on_ingress_event(ingress, data, tenant))


def handler(pool: asyncpg.Pool) -> Handler:
    async def handle(event: Envelope, delivery: Delivery) -> None:
        async with projection(pool, delivery, event.id) as conn:
            if conn is not None:
                await apply(conn, event.tenant, event.data)

    return handle
