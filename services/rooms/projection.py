"""The read model's projection, its only writer: events in (LiveKit's webhooks, the API's
actions, the reconciliation's findings), rows out, each event applied once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal

import asyncpg

from services.rooms import core, erasure, media_core, store, track_core
from services.rooms.core import ParticipantRow, RoomRow
from services.rooms.media_core import EgressRow, IngressRow
from services.rooms.store import Row
from services.rooms.track_core import TrackRow
from shared.consumer import ConsumerSpec, Delivery
from shared.db import Connection, projection
from shared.events import Envelope, Event
from shared.events.patients import ErasureRequested
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


async def _change(
    conn: Connection, kind: type[Row], key: str, rule: Callable[[Row | None], Row]
) -> None:
    """Load one row under its lock, apply a rule of the pure core, write it if it changed."""
    row = await store.load(conn, kind, key)
    await store.change(conn, row, rule(row))


# A rule of the pure core as a fold sees it: (row, event data, tenant, room sid, event time).
Rule = Callable[[Any, Any, str, str, datetime], Any]


def _fold(
    kind: type[Any], key: str, rule: Rule, *, room: Literal["", "event", "open"] = ""
) -> Fold:
    """The fold of an event that changes one row: ``kind`` keyed by the event's ``key`` field.
    ``room``: find the room instance first, from the event's ``room_sid`` (recording a room
    not seen yet) or as the open room of its name (action events name only the room)."""

    async def fold(conn: Connection, tenant: str, data: Any, at: datetime) -> None:
        room_sid = ""
        if room:
            named = data.room_sid if room == "event" else ""
            room_sid = await _room_sid(conn, tenant, data.room, named)
        await _change(
            conn, kind, getattr(data, key), lambda row: rule(row, data, tenant, room_sid, at)
        )

    return fold


async def _room_deleted(conn: Connection, tenant: str, data: RoomDeleted, at: datetime) -> None:
    if data.room_sid:  # empty: the read model had no open room of that name
        await _change(
            conn,
            RoomRow,
            data.room_sid,
            lambda row: core.on_room_deleted(
                row, sid=data.room_sid, tenant=tenant, name=data.room, at=at
            ),
        )


_UPDATE = _fold(
    ParticipantRow,
    "participant_sid",
    lambda r, e, t, sid, _: core.on_participant_updated(r, e, t, sid),
    room="open",
)


async def _participant_updated(
    conn: Connection, tenant: str, data: ParticipantUpdated, at: datetime
) -> None:
    if data.participant_sid:  # empty: LiveKit's answer named no participant
        await _UPDATE(conn, tenant, data, at)


async def _track_published(
    conn: Connection, tenant: str, data: TrackPublished, at: datetime
) -> None:
    room_sid = await _room_sid(conn, tenant, data.room, data.room_sid)
    participant = await store.load(conn, ParticipantRow, data.participant_sid)
    if participant is None:
        await store.save(conn, core.participant_from_track(data, tenant, room_sid))
    await _change(
        conn,
        TrackRow,
        data.track_sid,
        lambda row: track_core.on_track_published(row, data, tenant, room_sid),
    )


async def _room_reconciled(
    conn: Connection, tenant: str, data: RoomReconciled, at: datetime
) -> None:
    """The old reconciliation's announcement (no longer published): what it closed, it had
    closed at ``observed_at``."""
    at = data.observed_at
    if data.room_gone:
        room = await store.load(conn, RoomRow, data.room_sid)
        if room is not None:
            await store.change(conn, room, core.finish_room(room, at=at, by=core.RECONCILE))
    for gone in data.participants_gone:
        row = await store.load(conn, ParticipantRow, gone.participant_sid)
        if row is not None:
            await store.change(conn, row, core.leave(row, at=at, by=core.RECONCILE))


# How each event type changes the read model (inside the projection's transaction).
APPLY: dict[type[Event], Fold] = {
    # LiveKit's webhooks
    RoomStarted: _fold(RoomRow, "room_sid", lambda r, e, t, _, __: core.on_room_started(r, e, t)),
    RoomFinished: _fold(RoomRow, "room_sid", lambda r, e, t, _, __: core.on_room_finished(r, e, t)),
    ParticipantJoined: _fold(
        ParticipantRow,
        "participant_sid",
        lambda r, e, t, sid, _: core.on_participant_joined(r, e, t, sid),
        room="event",
    ),
    ParticipantLeft: _fold(
        ParticipantRow,
        "participant_sid",
        lambda r, e, t, sid, _: core.on_participant_left(r, e, t, sid),
        room="event",
    ),
    TrackPublished: _track_published,
    TrackUnpublished: _fold(
        TrackRow,
        "track_sid",
        lambda r, e, t, sid, _: track_core.on_track_unpublished(r, e, t, sid),
        room="event",
    ),
    EgressStarted: _fold(
        EgressRow, "egress_id", lambda r, e, t, _, __: media_core.on_egress_event(r, e, t)
    ),
    EgressUpdated: _fold(
        EgressRow, "egress_id", lambda r, e, t, _, __: media_core.on_egress_event(r, e, t)
    ),
    EgressEnded: _fold(
        EgressRow, "egress_id", lambda r, e, t, _, __: media_core.on_egress_event(r, e, t)
    ),
    IngressStarted: _fold(
        IngressRow, "ingress_id", lambda r, e, t, _, __: media_core.on_ingress_event(r, e, t)
    ),
    IngressEnded: _fold(
        IngressRow, "ingress_id", lambda r, e, t, _, __: media_core.on_ingress_event(r, e, t)
    ),
    # the API's actions (applied at once by the edge too; the event's time is the action's)
    RoomCreated: _fold(RoomRow, "room_sid", lambda r, e, t, _, __: core.on_room_created(r, e, t)),
    RoomDeleted: _room_deleted,
    ParticipantUpdated: _participant_updated,
    TrackMuted: _fold(
        TrackRow,
        "track_sid",
        lambda r, e, t, sid, at: track_core.on_track_muted(r, e, t, sid, at),
        room="open",
    ),
    EgressRequested: _fold(
        EgressRow, "egress_id", lambda r, e, t, _, at: media_core.on_egress_requested(r, e, t, at)
    ),
    EgressStopRequested: _fold(
        EgressRow, "egress_id", lambda r, e, t, _, __: media_core.on_egress_stop_requested(r, e, t)
    ),
    IngressCreated: _fold(
        IngressRow, "ingress_id", lambda r, e, t, _, at: media_core.on_ingress_created(r, e, t, at)
    ),
    IngressDeleted: _fold(
        IngressRow, "ingress_id", lambda r, e, t, _, at: media_core.on_ingress_deleted(r, e, t, at)
    ),
    # the reconciliation's findings
    RoomFound: _fold(RoomRow, "room_sid", lambda r, e, t, _, __: core.on_room_found(r, e, t)),
    RoomPresumedFinished: _fold(
        RoomRow, "room_sid", lambda r, e, t, _, __: core.on_room_presumed_finished(r, e, t)
    ),
    ParticipantFound: _fold(
        ParticipantRow,
        "participant_sid",
        lambda r, e, t, _, __: core.on_participant_found(r, e, t),
        room="event",
    ),
    ParticipantPresumedGone: _fold(
        ParticipantRow,
        "participant_sid",
        lambda r, e, t, _, __: core.on_participant_presumed_gone(r, e, t),
        room="event",
    ),
    TrackFound: _fold(
        TrackRow, "track_sid", lambda r, e, t, _, __: track_core.on_track_found(r, e, t)
    ),
    TrackPresumedUnpublished: _fold(
        TrackRow,
        "track_sid",
        lambda r, e, t, _, __: track_core.on_track_presumed_unpublished(r, e, t),
    ),
    RoomReconciled: _room_reconciled,
    # a patient's erasure (services/rooms/erasure.py)
    ErasureRequested: erasure.fold,
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
    durable="rooms-read-model",
    # An erasure is folded as any event, and answered (PatientDataErased) in the same transaction.
    handlers={**dict.fromkeys(APPLY, project), ErasureRequested: erasure.erase},
)
