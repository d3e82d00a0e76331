"""The reconciliation: every so often, list LiveKit's rooms and participants, compare them with
the read model and publish what the webhooks missed (webhooks can be dropped) as events, which
the projection and billing fold. It writes no read-model row itself."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from datetime import UTC, datetime, timedelta

import asyncpg
from livekit import api as lk

from services.rooms import store
from services.rooms.livekit_client import calling, participant_row, room_row, track_row
from services.rooms.privacy import opened_all
from services.rooms.reconcile_core import (
    LiveParticipant,
    LiveRoom,
    Model,
    listed_sids,
    plan,
    whole_second,
)
from shared.events import Envelope
from shared.outbox import add_to_outbox
from shared.participants import patient_ref_of
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
                    row=participant,
                    tracks=[track_row(t, participant) for t in info.tracks],
                    patient_ref=patient_ref_of(info.attributes),
                )
            )
        return LiveRoom(row=row, participants=live)

    return list(await asyncio.gather(*(one(room) for room in listing.rooms)))


async def _reconcile(
    pool: asyncpg.Pool, api: lk.LiveKitAPI, phi: Phi, settle: timedelta
) -> list[Envelope]:
    # The read model is compared opened, as LiveKit lists it, so sealing never looks like a
    # change; what is found is sealed in the outbox (and the projection copies it sealed).
    # Taken before LiveKit is asked: whatever the listing shows was there at this time or later.
    observed_at = datetime.now(UTC)
    live = await _live_rooms(api)
    listed = listed_sids(live)
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
    seen = await store.sightings(pool, [*model.rooms, *model.participants, *model.tracks])
    findings = plan(model, live, seen, observed_at=observed_at, settled_before=observed_at - settle)
    published = []
    async with pool.acquire() as conn, conn.transaction():
        known = await store.published(conn, [f.event_id for f in findings])
        for finding in findings:
            if finding.event_id not in known:  # the same finding, made before: one event
                event = await add_to_outbox(
                    conn,
                    finding.event,
                    source=SOURCE,
                    tenant=finding.tenant,
                    key=finding.key,
                    event_id=finding.event_id,
                    phi=phi,
                )
                published.append(event)
        await store.record_sightings(conn, listed, whole_second(observed_at))
    if published:
        counts = Counter(event.type for event in published)
        log.warning(
            "reconciliation: the webhooks missed %s",
            ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items())),
        )
    return published


async def reconcile_once(
    pool: asyncpg.Pool, api: lk.LiveKitAPI, phi: Phi, *, settle: timedelta = SETTLE
) -> list[Envelope]:
    """One pass, after any other replica's: returns the events it published."""
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK)
        try:
            return await _reconcile(pool, api, phi, settle)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK)


async def reconcile_turn(pool: asyncpg.Pool, api: lk.LiveKitAPI, phi: Phi) -> None:
    """One pass, unless another replica is running one."""
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK):
            return
        try:
            await _reconcile(pool, api, phi, SETTLE)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK)
