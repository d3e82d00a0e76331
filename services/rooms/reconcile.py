"""The reconciliation: every so often, compare the read model with LiveKit's ListRooms and
ListParticipants and heal it (webhooks can be dropped), announcing corrections as events."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

import asyncpg
from livekit import api as lk
from msgspec.structs import replace

from services.rooms import core, store
from services.rooms.core import ParticipantRow, RoomRow, TrackRow
from services.rooms.livekit_client import calling, participant_row, room_row, track_row
from services.rooms.privacy import opened_all, sealed
from services.rooms.reconciling import (
    FinishRoom,
    LiveParticipant,
    LiveRoom,
    Model,
    Operation,
    SeeParticipant,
    SeeRoom,
    SeeTrack,
    Unpublish,
    plan,
    reconciled_event,
)
from shared.db import Connection
from shared.events.rooms import RoomReconciled
from shared.outbox import add_to_outbox
from shared.phi import Phi

log = logging.getLogger(__name__)

SOURCE = "mediai/rooms"
_LOCK = 0x726F6F6D73  # "rooms": one reconciliation at a time across replicas
# Rows written this recently are left alone: their webhooks may be newer than the listing.
SETTLE = timedelta(seconds=5)


async def _live_rooms(api: lk.LiveKitAPI) -> list[LiveRoom]:
    async with calling():
        listing = await api.room.list_rooms(lk.ListRoomsRequest())
    limit = asyncio.Semaphore(8)

    async def one(room: lk.Room) -> LiveRoom:
        row = room_row(room)
        async with limit, calling():
            participants = await api.room.list_participants(
                lk.ListParticipantsRequest(room=room.name)
            )
        live = []
        for info in participants.participants:
            participant = participant_row(info, row)
            live.append(
                LiveParticipant(
                    row=participant, tracks=[track_row(t, participant) for t in info.tracks]
                )
            )
        return LiveRoom(row=row, participants=live)

    return list(await asyncio.gather(*(one(room) for room in listing.rooms)))


async def _apply(conn: Connection, phi: Phi, operation: Operation, at: datetime) -> bool:
    """Apply one planned operation to the row as it is now; True if it changed it. LiveKit's
    rows come in clear: their personal columns are sealed before they are written."""
    if isinstance(operation, SeeRoom | SeeParticipant | SeeTrack):
        operation = replace(operation, row=await sealed(phi, operation.row))
    if isinstance(operation, FinishRoom | SeeRoom):
        sid = operation.sid if isinstance(operation, FinishRoom) else operation.row.sid
        room = await store.load(conn, RoomRow, sid)
        if isinstance(operation, SeeRoom):
            return await store.change(conn, room, core.room_seen(room, operation.row))
        return room is not None and await store.change(
            conn, room, core.finish_room(room, at=at, by=core.RECONCILE)
        )
    if isinstance(operation, SeeParticipant):
        participant = await store.load(conn, ParticipantRow, operation.row.sid)
        return await store.change(
            conn, participant, core.participant_seen(participant, operation.row)
        )
    if isinstance(operation, SeeTrack | Unpublish):
        sid = operation.sid if isinstance(operation, Unpublish) else operation.row.sid
        track = await store.load(conn, TrackRow, sid)
        if isinstance(operation, SeeTrack):
            return await store.change(conn, track, core.track_seen(track, operation.row))
        return track is not None and await store.change(conn, track, core.unpublish(track, at=at))
    participant = await store.load(conn, ParticipantRow, operation.sid)
    return participant is not None and await store.change(
        conn, participant, core.leave(participant, at=at, by=core.RECONCILE)
    )


async def reconcile_once(
    pool: asyncpg.Pool, api: lk.LiveKitAPI, phi: Phi, *, settle: timedelta = SETTLE
) -> list[RoomReconciled]:
    """One pass: list LiveKit, compare, correct; returns the corrections announced. The read
    model is compared opened, as LiveKit lists it, so sealing never looks like a change."""
    observed_at = datetime.now(UTC)
    live = await _live_rooms(api)
    rooms, participants, tracks = await store.snapshot(
        pool,
        [room.row.sid for room in live],
        [p.row.sid for room in live for p in room.participants],
        [t.sid for room in live for p in room.participants for t in p.tracks],
    )
    model = Model(
        rooms={r.sid: r for r in await opened_all(phi, rooms)},
        participants={p.sid: p for p in await opened_all(phi, participants)},
        tracks={t.sid: t for t in await opened_all(phi, tracks)},
    )
    announced = []
    for room_plan in plan(
        model, live, observed_at=observed_at, settled_before=observed_at - settle
    ):
        async with pool.acquire() as conn, conn.transaction():
            applied = {
                op for op in room_plan.operations if await _apply(conn, phi, op, observed_at)
            }
            event = reconciled_event(room_plan, applied, observed_at)
            if event is not None:
                await add_to_outbox(
                    conn,
                    event,
                    source=SOURCE,
                    tenant=room_plan.room.tenant,
                    key=room_plan.room.name,
                )
                announced.append(event)
    if announced:
        log.warning(
            "reconciliation corrected %d room(s) the webhooks had left out of step "
            "(%d participant(s) gone, %d found)",
            len(announced),
            sum(len(e.participants_gone) for e in announced),
            sum(len(e.participants_found) for e in announced),
        )
    return announced


async def reconcile_turn(pool: asyncpg.Pool, api: lk.LiveKitAPI, phi: Phi) -> None:
    """One reconciliation, unless another replica is running one."""
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK):
            return
        try:
            await reconcile_once(pool, api, phi)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK)
