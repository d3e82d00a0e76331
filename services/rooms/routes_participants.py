"""Participants of a room: list, get, remove, mute a track, update metadata/permissions."""

from __future__ import annotations

import asyncpg
from litestar import delete, get, patch, post
from litestar.params import JSONBody, Parameter
from livekit import api as lk

from services.rooms import store
from services.rooms.core import ParticipantRow, RoomRow
from services.rooms.edges import LiveKitDep, checked_identity, checked_room, record
from services.rooms.errors import ParticipantNotFoundError, RoomNotFoundError, responses
from services.rooms.livekit_client import calling, participant_row, track_row
from services.rooms.privacy import opened, opened_all
from services.rooms.schemas import (
    MuteTrackRequest,
    ParticipantList,
    ParticipantView,
    TrackView,
    UpdateParticipantRequest,
)
from services.rooms.track_core import TrackRow
from shared.events.rooms import (
    ParticipantPermission,
    ParticipantRemoved,
    ParticipantUpdated,
    TrackMuted,
)
from shared.http import BusDep, CallerTenant, PoolDep
from shared.naming import livekit_room
from shared.phi import Phi
from shared.tenants import Tenant

_BASE = "/v1/rooms/{name:str}/participants"
_SOURCES = {
    "camera": lk.TrackSource.CAMERA,
    "microphone": lk.TrackSource.MICROPHONE,
    "screen_share": lk.TrackSource.SCREEN_SHARE,
    "screen_share_audio": lk.TrackSource.SCREEN_SHARE_AUDIO,
}


async def _room(pool: asyncpg.Pool, tenant: Tenant, name: str) -> RoomRow:
    row = await store.open_room(pool, tenant.id, checked_room(name))
    if row is None:
        raise RoomNotFoundError(f"no open room {name!r}")
    return row


def _no_participant() -> ParticipantNotFoundError:
    return ParticipantNotFoundError("no such participant in this room")


async def _view(phi: Phi, row: ParticipantRow, tracks: list[TrackRow]) -> ParticipantView:
    return ParticipantView.of(await opened(phi, row), await opened_all(phi, tracks))


async def _present(pool: asyncpg.Pool, room: RoomRow, identity: str) -> ParticipantRow | None:
    found = await store.present_participants(pool, room.sid, identity)
    return found[-1][0] if found else None


@get(
    _BASE,
    operation_id="listParticipants",
    summary="List who is in a room",
    responses=responses(400, 404),
)
async def list_participants(
    name: str, tenant: CallerTenant, pool: PoolDep, bus: BusDep
) -> ParticipantList:
    room = await _room(pool, tenant, name)
    present = await store.present_participants(pool, room.sid)
    return ParticipantList(participants=[await _view(bus.phi, p, t) for p, t in present])


@get(
    f"{_BASE}/{{identity:str}}",
    operation_id="getParticipant",
    summary="Get a participant of a room",
    responses=responses(400, 404),
)
async def get_participant(
    name: str, identity: str, tenant: CallerTenant, pool: PoolDep, bus: BusDep
) -> ParticipantView:
    checked_identity(identity)
    room = await _room(pool, tenant, name)
    found = await store.present_participants(pool, room.sid, identity)
    if not found:
        raise _no_participant()
    return await _view(bus.phi, *found[-1])


@delete(
    f"{_BASE}/{{identity:str}}",
    operation_id="removeParticipant",
    status_code=204,
    summary="Remove a participant from a room (it is disconnected)",
    responses=responses(400, 404),
)
async def remove_participant(
    name: str, identity: str, tenant: CallerTenant, pool: PoolDep, livekit: LiveKitDep
) -> None:
    checked_identity(identity)
    room = await _room(pool, tenant, name)
    async with calling(not_found=_no_participant()):
        await livekit.room.remove_participant(
            lk.RoomParticipantIdentity(room=livekit_room(tenant.id, name), identity=identity)
        )
    known = await _present(pool, room, identity)
    event = ParticipantRemoved(
        room=name, identity=identity, participant_sid=known.sid if known else ""
    )
    await record(pool, event, tenant=tenant.id, key=name)


@post(
    f"{_BASE}/{{identity:str}}/tracks/{{track_sid:str}}/mute",
    operation_id="muteTrack",
    status_code=200,
    summary="Mute or unmute a participant's published track",
    responses=responses(400, 404),
)
async def mute_track(
    name: str,
    identity: str,
    data: JSONBody[MuteTrackRequest],
    tenant: CallerTenant,
    pool: PoolDep,
    livekit: LiveKitDep,
    track_sid: str = Parameter(max_length=64, description="The track's sid (TR_...)"),
) -> TrackView:
    checked_identity(identity)
    room = await _room(pool, tenant, name)
    async with calling(not_found=_no_participant()):
        answer = await livekit.room.mute_published_track(
            lk.MuteRoomTrackRequest(
                room=livekit_room(tenant.id, name),
                identity=identity,
                track_sid=track_sid,
                muted=data.muted,
            )
        )
    owner = await _present(pool, room, identity) or ParticipantRow(
        sid="", room_sid=room.sid, tenant=tenant.id, room=name, identity=identity
    )
    event = TrackMuted(
        room=name,
        identity=identity,
        track_sid=track_sid,
        muted=answer.track.muted,
        participant_sid=owner.sid,
    )
    await record(pool, event, tenant=tenant.id, key=name)
    return TrackView.of(track_row(answer.track, owner))


@patch(
    f"{_BASE}/{{identity:str}}",
    operation_id="updateParticipant",
    summary="Change a participant's name, metadata, attributes or permissions",
    description="Only the fields given change. LiveKit cannot clear metadata to empty.",
    responses=responses(400, 404),
)
async def update_participant(
    name: str,
    identity: str,
    data: JSONBody[UpdateParticipantRequest],
    tenant: CallerTenant,
    pool: PoolDep,
    livekit: LiveKitDep,
    bus: BusDep,
) -> ParticipantView:
    checked_identity(identity)
    room = await _room(pool, tenant, name)
    update = lk.UpdateParticipantRequest(
        room=livekit_room(tenant.id, name),
        identity=identity,
        name=data.name or "",
        metadata=data.metadata or "",
        attributes=data.attributes or {},
    )
    permission = None
    if data.permission is not None:
        p = data.permission
        permission = ParticipantPermission(
            can_subscribe=p.can_subscribe,
            can_publish=p.can_publish,
            can_publish_data=p.can_publish_data,
            hidden=p.hidden,
            can_publish_sources=list(p.can_publish_sources),
        )
        update.permission.CopyFrom(
            lk.ParticipantPermission(
                can_subscribe=p.can_subscribe,
                can_publish=p.can_publish,
                can_publish_data=p.can_publish_data,
                hidden=p.hidden,
                can_publish_sources=[_SOURCES[s] for s in p.can_publish_sources],
            )
        )
    async with calling(not_found=_no_participant()):
        info = await livekit.room.update_participant(update)
    seen = participant_row(info, room)
    event = ParticipantUpdated(
        room=name,
        identity=identity,
        participant_sid=info.sid,
        name=data.name,
        metadata=data.metadata,
        attributes=data.attributes,
        permission=permission,
    )
    await record(pool, event, tenant=tenant.id, key=name, phi=bus.phi)
    return ParticipantView.of(seen, [track_row(t, seen) for t in info.tracks])


HANDLERS = [list_participants, get_participant, remove_participant, mute_track, update_participant]
