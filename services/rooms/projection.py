"""The read model's projection: webhook events in, rows out, each event applied once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from services.rooms import core, media_core, store
from services.rooms.core import ParticipantRow, RoomRow, TrackRow
from services.rooms.media_core import EgressRow, IngressRow
from shared.consumer import ConsumerSpec, Delivery
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


async def _room_sid(conn: Connection, tenant: str, room: str, sid: str) -> str:
    """The event's room instance; events from before ``room_sid`` existed name only the room."""
    if sid:
        row = await store.load(conn, RoomRow, sid)
        await store.change(conn, row, core.room_implied(row, sid=sid, tenant=tenant, name=room))
        return sid
    open_room = await store.open_room(conn, tenant, room)
    return open_room.sid if open_room else ""


async def _room_started(conn: Connection, tenant: str, data: RoomStarted) -> None:
    room = await store.load(conn, RoomRow, data.room_sid)
    await store.change(conn, room, core.on_room_started(room, data, tenant))


async def _room_finished(conn: Connection, tenant: str, data: RoomFinished) -> None:
    room = await store.load(conn, RoomRow, data.room_sid)
    await store.change(conn, room, core.on_room_finished(room, data, tenant))


async def _participant_joined(conn: Connection, tenant: str, data: ParticipantJoined) -> None:
    room_sid = await _room_sid(conn, tenant, data.room, data.room_sid)
    participant = await store.load(conn, ParticipantRow, data.participant_sid)
    after = core.on_participant_joined(participant, data, tenant, room_sid)
    await store.change(conn, participant, after)


async def _participant_left(conn: Connection, tenant: str, data: ParticipantLeft) -> None:
    room_sid = await _room_sid(conn, tenant, data.room, data.room_sid)
    participant = await store.load(conn, ParticipantRow, data.participant_sid)
    after = core.on_participant_left(participant, data, tenant, room_sid)
    await store.change(conn, participant, after)


async def _track_published(conn: Connection, tenant: str, data: TrackPublished) -> None:
    room_sid = await _room_sid(conn, tenant, data.room, data.room_sid)
    participant = await store.load(conn, ParticipantRow, data.participant_sid)
    if participant is None:
        await store.save(conn, core.participant_from_track(data, tenant, room_sid))
    track = await store.load(conn, TrackRow, data.track_sid)
    await store.change(conn, track, core.on_track_published(track, data, tenant, room_sid))


async def _track_unpublished(conn: Connection, tenant: str, data: TrackUnpublished) -> None:
    room_sid = data.room_sid or await _room_sid(conn, tenant, data.room, "")
    track = await store.load(conn, TrackRow, data.track_sid)
    await store.change(conn, track, core.on_track_unpublished(track, data, tenant, room_sid))


async def _egress(
    conn: Connection, tenant: str, data: EgressStarted | EgressUpdated | EgressEnded
) -> None:
    egress = await store.load(conn, EgressRow, data.egress_id)
    await store.change(conn, egress, media_core.on_egress_event(egress, data, tenant))


async def _ingress(conn: Connection, tenant: str, data: IngressStarted | IngressEnded) -> None:
    ingress = await store.load(conn, IngressRow, data.ingress_id)
    await store.change(conn, ingress, media_core.on_ingress_event(ingress, data, tenant))


# How each event type changes the read model (inside the projection's transaction).
APPLY: dict[type[Event], Callable[[Connection, str, Any], Awaitable[None]]] = {
    RoomStarted: _room_started,
    RoomFinished: _room_finished,
    ParticipantJoined: _participant_joined,
    ParticipantLeft: _participant_left,
    TrackPublished: _track_published,
    TrackUnpublished: _track_unpublished,
    EgressStarted: _egress,
    EgressUpdated: _egress,
    EgressEnded: _egress,
    IngressStarted: _ingress,
    IngressEnded: _ingress,
}


async def project(pool: asyncpg.Pool, event: Envelope, delivery: Delivery) -> None:
    """Apply one event to the read model, once."""
    async with projection(pool, delivery, event.id) as conn:
        if conn is not None:
            await APPLY[type(event.data)](conn, event.tenant, event.data)


READ_MODEL: ConsumerSpec[asyncpg.Pool] = ConsumerSpec(
    durable="rooms-read-model", handlers=dict.fromkeys(APPLY, project)
)
