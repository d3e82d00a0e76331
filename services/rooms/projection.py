"""The read model's projection, its only writer: events in (LiveKit's webhooks, the API's
actions, the reconciliation's findings), rows out, each event applied once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg

from services.rooms import core, media_core, store, track_core
from services.rooms.core import ParticipantRow, RoomRow
from services.rooms.media_core import EgressRow, IngressRow
from services.rooms.track_core import TrackRow
from shared.consumer import ConsumerSpec, Delivery
from shared.db import Connection, projection
from shared.events import Envelope, Event
from shared.events.reconciliation import (
    ParticipantFound,
    ParticipantPresumedGone,
    RoomFound,
    RoomPresumedFinished,
    RoomReconciled,
    TrackFound,
    TrackPresumedUnpublished,
)
from shared.events.rooms import (
    EgressEnded,
    EgressRequested,
    EgressStarted,
    EgressStopRequested,
    EgressUpdated,
    IngressCreated,
    IngressDeleted,
    IngressEnded,
    IngressStarted,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    RoomCreated,
    RoomDeleted,
    RoomFinished,
    RoomStarted,
    TrackMuted,
    TrackPublished,
    TrackUnpublished,
)

# A fold: (transaction, tenant, event data, event time) -> the rows it changes, written.
Fold = Callable[[Connection, str, Any, datetime], Awaitable[None]]


async def _room_sid(conn: Connection, tenant: str, room: str, sid: str) -> str:
    """The event's room instance; events from before ``room_sid`` existed name only the room."""
    if sid:
        row = await store.load(conn, RoomRow, sid)
        await store.change(conn, row, core.room_implied(row, sid=sid, tenant=tenant, name=room))
        return sid
    open_room = await store.open_room(conn, tenant, room)
    return open_room.sid if open_room else ""


# --- rooms ------------------------------------------------------------------------------------


async def _room(conn: Connection, sid: str, rule: Callable[[RoomRow | None], RoomRow]) -> None:
    row = await store.load(conn, RoomRow, sid)
    await store.change(conn, row, rule(row))


async def _room_started(conn: Connection, tenant: str, data: RoomStarted, at: datetime) -> None:
    await _room(conn, data.room_sid, lambda row: core.on_room_started(row, data, tenant))


async def _room_created(conn: Connection, tenant: str, data: RoomCreated, at: datetime) -> None:
    await _room(conn, data.room_sid, lambda row: core.on_room_created(row, data, tenant))


async def _room_found(conn: Connection, tenant: str, data: RoomFound, at: datetime) -> None:
    await _room(conn, data.room_sid, lambda row: core.on_room_found(row, data, tenant))


async def _room_finished(conn: Connection, tenant: str, data: RoomFinished, at: datetime) -> None:
    await _room(conn, data.room_sid, lambda row: core.on_room_finished(row, data, tenant))


async def _room_deleted(conn: Connection, tenant: str, data: RoomDeleted, at: datetime) -> None:
    if data.room_sid:  # empty: the read model had no open room of that name
        await _room(
            conn,
            data.room_sid,
            lambda row: core.on_room_deleted(
                row, sid=data.room_sid, tenant=tenant, name=data.room, at=at
            ),
        )


async def _room_presumed_finished(
    conn: Connection, tenant: str, data: RoomPresumedFinished, at: datetime
) -> None:
    await _room(conn, data.room_sid, lambda row: core.on_room_presumed_finished(row, data, tenant))


async def _room_reconciled(
    conn: Connection, tenant: str, data: RoomReconciled, at: datetime
) -> None:
    """The old reconciliation's announcement (no longer published): what it closed, it had
    closed at ``observed_at``."""
    if data.room_gone:
        room = await store.load(conn, RoomRow, data.room_sid)
        if room is not None:
            after = core.finish_room(room, at=data.observed_at, by=core.RECONCILE)
            await store.change(conn, room, after)
    for gone in data.participants_gone:
        row = await store.load(conn, ParticipantRow, gone.participant_sid)
        if row is not None:
            after_leave = core.leave(row, at=data.observed_at, by=core.RECONCILE)
            await store.change(conn, row, after_leave)


# --- participants -----------------------------------------------------------------------------


async def _participant(
    conn: Connection, sid: str, rule: Callable[[ParticipantRow | None], ParticipantRow]
) -> None:
    row = await store.load(conn, ParticipantRow, sid)
    await store.change(conn, row, rule(row))


async def _participant_joined(
    conn: Connection, tenant: str, data: ParticipantJoined, at: datetime
) -> None:
    room_sid = await _room_sid(conn, tenant, data.room, data.room_sid)
    await _participant(
        conn,
        data.participant_sid,
        lambda row: core.on_participant_joined(row, data, tenant, room_sid),
    )


async def _participant_left(
    conn: Connection, tenant: str, data: ParticipantLeft, at: datetime
) -> None:
    room_sid = await _room_sid(conn, tenant, data.room, data.room_sid)
    await _participant(
        conn,
        data.participant_sid,
        lambda row: core.on_participant_left(row, data, tenant, room_sid),
    )


async def _participant_found(
    conn: Connection, tenant: str, data: ParticipantFound, at: datetime
) -> None:
    await _room_sid(conn, tenant, data.room, data.room_sid)
    await _participant(
        conn, data.participant_sid, lambda row: core.on_participant_found(row, data, tenant)
    )


async def _participant_presumed_gone(
    conn: Connection, tenant: str, data: ParticipantPresumedGone, at: datetime
) -> None:
    await _room_sid(conn, tenant, data.room, data.room_sid)
    await _participant(
        conn,
        data.participant_sid,
        lambda row: core.on_participant_presumed_gone(row, data, tenant),
    )


async def _participant_updated(
    conn: Connection, tenant: str, data: ParticipantUpdated, at: datetime
) -> None:
    if not data.participant_sid:
        return
    room_sid = await _room_sid(conn, tenant, data.room, "")
    await _participant(
        conn,
        data.participant_sid,
        lambda row: core.on_participant_updated(row, data, tenant, room_sid),
    )


# --- tracks -----------------------------------------------------------------------------------


async def _track(conn: Connection, sid: str, rule: Callable[[TrackRow | None], TrackRow]) -> None:
    row = await store.load(conn, TrackRow, sid)
    await store.change(conn, row, rule(row))


async def _track_published(
    conn: Connection, tenant: str, data: TrackPublished, at: datetime
) -> None:
    room_sid = await _room_sid(conn, tenant, data.room, data.room_sid)
    participant = await store.load(conn, ParticipantRow, data.participant_sid)
    if participant is None:
        await store.save(conn, core.participant_from_track(data, tenant, room_sid))
    await _track(
        conn, data.track_sid, lambda row: track_core.on_track_published(row, data, tenant, room_sid)
    )


async def _track_unpublished(
    conn: Connection, tenant: str, data: TrackUnpublished, at: datetime
) -> None:
    room_sid = data.room_sid or await _room_sid(conn, tenant, data.room, "")
    await _track(
        conn,
        data.track_sid,
        lambda row: track_core.on_track_unpublished(row, data, tenant, room_sid),
    )


async def _track_found(conn: Connection, tenant: str, data: TrackFound, at: datetime) -> None:
    await _track(conn, data.track_sid, lambda row: track_core.on_track_found(row, data, tenant))


async def _track_presumed_unpublished(
    conn: Connection, tenant: str, data: TrackPresumedUnpublished, at: datetime
) -> None:
    await _track(
        conn,
        data.track_sid,
        lambda row: track_core.on_track_presumed_unpublished(row, data, tenant),
    )


async def _track_muted(conn: Connection, tenant: str, data: TrackMuted, at: datetime) -> None:
    room_sid = await _room_sid(conn, tenant, data.room, "")
    await _track(
        conn,
        data.track_sid,
        lambda row: track_core.on_track_muted(row, data, tenant, room_sid, at),
    )


# --- egress and ingress -----------------------------------------------------------------------


async def _egress(
    conn: Connection, tenant: str, data: EgressStarted | EgressUpdated | EgressEnded, at: datetime
) -> None:
    egress = await store.load(conn, EgressRow, data.egress_id)
    await store.change(conn, egress, media_core.on_egress_event(egress, data, tenant))


async def _egress_requested(
    conn: Connection, tenant: str, data: EgressRequested, at: datetime
) -> None:
    egress = await store.load(conn, EgressRow, data.egress_id)
    await store.change(conn, egress, media_core.on_egress_requested(egress, data, tenant, at))


async def _egress_stop_requested(
    conn: Connection, tenant: str, data: EgressStopRequested, at: datetime
) -> None:
    egress = await store.load(conn, EgressRow, data.egress_id)
    await store.change(conn, egress, media_core.on_egress_stop_requested(egress, data, tenant))


async def _ingress(
    conn: Connection, tenant: str, data: IngressStarted | IngressEnded, at: datetime
) -> None:
    ingress = await store.load(conn, IngressRow, data.ingress_id)
    await store.change(conn, ingress, media_core.on_ingress_event(ingress, data, tenant))


async def _ingress_created(
    conn: Connection, tenant: str, data: IngressCreated, at: datetime
) -> None:
    ingress = await store.load(conn, IngressRow, data.ingress_id)
    await store.change(conn, ingress, media_core.on_ingress_created(ingress, data, tenant, at))


async def _ingress_deleted(
    conn: Connection, tenant: str, data: IngressDeleted, at: datetime
) -> None:
    ingress = await store.load(conn, IngressRow, data.ingress_id)
    await store.change(conn, ingress, media_core.on_ingress_deleted(ingress, data, tenant, at))


# How each event type changes the read model (inside the projection's transaction).
APPLY: dict[type[Event], Fold] = {
    # LiveKit's webhooks
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
    # the API's actions
    RoomCreated: _room_created,
    RoomDeleted: _room_deleted,
    ParticipantUpdated: _participant_updated,
    TrackMuted: _track_muted,
    EgressRequested: _egress_requested,
    EgressStopRequested: _egress_stop_requested,
    IngressCreated: _ingress_created,
    IngressDeleted: _ingress_deleted,
    # the reconciliation's findings
    RoomFound: _room_found,
    RoomPresumedFinished: _room_presumed_finished,
    ParticipantFound: _participant_found,
    ParticipantPresumedGone: _participant_presumed_gone,
    TrackFound: _track_found,
    TrackPresumedUnpublished: _track_presumed_unpublished,
    RoomReconciled: _room_reconciled,
}


async def apply(conn: Connection, event: Envelope) -> None:
    """Apply one event to the read model in the caller's transaction (no inbox check)."""
    await APPLY[type(event.data)](conn, event.tenant, event.data, event.time)


async def project(pool: asyncpg.Pool, event: Envelope, delivery: Delivery) -> None:
    """Apply one event to the read model, once."""
    async with projection(pool, delivery, event.id) as conn:
        if conn is not None:
            await apply(conn, event)


READ_MODEL: ConsumerSpec[asyncpg.Pool] = ConsumerSpec(
    durable="rooms-read-model", handlers=dict.fromkeys(APPLY, project)
)
