"""Participants of a room: list, get, remove, mute a track, update metadata/permissions."""

from __future__ import annotations

import asyncpg
from litestar import delete, get, patch, post
from litestar.params import JSONBody, Parameter
from livekit import api as lk

from services.rooms import store
from services.rooms.core import ParticipantRow, RoomRow
from services.rooms.edges import LiveKitDep, checked_identity, checked_room, record
from services.rooms.errors import (
    ParticipantNotFoundError,
    RoomNotFoundError,
    TrackNotFoundError,
    responses,
)
from services.rooms.livekit_client import calling, find_room, participant_row, track_row
from services.rooms.privacy import opened, opened_all, seal
from services.rooms.schemas import (
    MuteTrackRequest,
    ParticipantList,
    ParticipantView,
    TrackView,
    UpdateParticipantRequest,
)
from services.rooms.track_core import TrackRow
from shared.contract import IdentityPath, RoomNamePath, links
from shared.events.rooms import (
    ParticipantPermission,
    ParticipantRemoved,
    ParticipantUpdated,
    TrackMuted,
)
from shared.http import ApiError, BusDep, CallerTenant, PoolDep
from shared.naming import livekit_room
from shared.participants import patient_ref_of
from shared.phi import Phi
from shared.tenants import Tenant

_BASE = "/v1/rooms/{name:str}/participants"
# The answers of an action LiveKit does on a participant.
_LIVE = responses(
    "invalid_room_name",
    "invalid_identity",
    "livekit_refused",
    "room_not_found",
    "participant_not_found",
    "livekit_unavailable",
)
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


def _missing(message: str) -> ApiError:
    """What LiveKit did not find in a room: a track, or the participant."""
    if "track" in message.lower():
        return TrackNotFoundError("the participant has no published track of that sid")
    return _no_participant()


async def _in_livekit(
    livekit: lk.LiveKitAPI, tenant: Tenant, name: str, identity: str
) -> tuple[str, lk.ParticipantInfo]:
    """The room's LiveKit name, and the participant as LiveKit has them now: asked first, as
    LiveKit does not check before muting, and answers an action on someone not there "no
    response from servers" (an outage, where the truth is a 404). The room's count of
    participants cannot tell: it lags behind a join."""
    livekit_name = livekit_room(tenant.id, name)
    if await find_room(livekit, livekit_name) is None:
        raise RoomNotFoundError(f"no open room {name!r}")
    async with calling(not_found=_no_participant()):
        present = await livekit.room.get_participant(
            lk.RoomParticipantIdentity(room=livekit_name, identity=identity)
        )
    return livekit_name, present


async def _view(phi: Phi, row: ParticipantRow, tracks: list[TrackRow]) -> ParticipantView:
    return ParticipantView.of(await opened(phi, row), await opened_all(phi, tracks))


async def _present(pool: asyncpg.Pool, room: RoomRow, identity: str) -> ParticipantRow | None:
    found = await store.present_participants(pool, room.sid, identity)
    return found[-1][0] if found else None


_FIRST = {"name": "$request.path.name", "identity": "$response.body#/participants/0/identity"}


@get(
    _BASE,
    operation_id="listParticipants",
    summary="List who is in a room",
    # Act on the first one listed (and on their first track).
    opt=links(
        200,
        getParticipant=_FIRST,
        updateParticipant=_FIRST,
        removeParticipant=_FIRST,
        muteTrack={**_FIRST, "track_sid": "$response.body#/participants/0/tracks/0/sid"},
    ),
    responses=responses("invalid_room_name", "room_not_found"),
)
async def list_participants(
    name: RoomNamePath, tenant: CallerTenant, pool: PoolDep, bus: BusDep
) -> ParticipantList:
    room = await _room(pool, tenant, name)
    present = await store.present_participants(pool, room.sid)
    return ParticipantList(participants=[await _view(bus.phi, p, t) for p, t in present])


@get(
    f"{_BASE}/{{identity:str}}",
    operation_id="getParticipant",
    summary="Get a participant of a room",
    responses=responses(
        "invalid_room_name", "invalid_identity", "room_not_found", "participant_not_found"
    ),
)
async def get_participant(
    name: RoomNamePath, identity: IdentityPath, tenant: CallerTenant, pool: PoolDep, bus: BusDep
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
    responses=_LIVE,
)
async def remove_participant(
    name: RoomNamePath,
    identity: IdentityPath,
    tenant: CallerTenant,
    pool: PoolDep,
    livekit: LiveKitDep,
) -> None:
    checked_identity(identity)
    room = await _room(pool, tenant, name)
    livekit_name, _ = await _in_livekit(livekit, tenant, name, identity)
    async with calling(not_found=_no_participant()):
        await livekit.room.remove_participant(
            lk.RoomParticipantIdentity(room=livekit_name, identity=identity)
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
    responses=responses(
        "invalid_room_name",
        "invalid_identity",
        "livekit_refused",
        "room_not_found",
        "participant_not_found",
        "track_not_found",
        "remote_unmute_disabled",
        "livekit_unavailable",
    ),
)
async def mute_track(
    name: RoomNamePath,
    identity: IdentityPath,
    data: JSONBody[MuteTrackRequest],
    tenant: CallerTenant,
    pool: PoolDep,
    livekit: LiveKitDep,
    track_sid: str = Parameter(min_length=1, max_length=64, description="The track's sid (TR_...)"),
) -> TrackView:
    checked_identity(identity)
    room = await _room(pool, tenant, name)
    livekit_name, present = await _in_livekit(livekit, tenant, name, identity)
    if track_sid not in {track.sid for track in present.tracks}:
        raise TrackNotFoundError("the participant has no published track of that sid")
    async with calling(not_found=_missing):
        answer = await livekit.room.mute_published_track(
            lk.MuteRoomTrackRequest(
                room=livekit_name,
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
    responses=_LIVE,
)
async def update_participant(
    name: RoomNamePath,
    identity: IdentityPath,
    data: JSONBody[UpdateParticipantRequest],
    tenant: CallerTenant,
    pool: PoolDep,
    livekit: LiveKitDep,
    bus: BusDep,
) -> ParticipantView:
    checked_identity(identity)
    room = await _room(pool, tenant, name)
    # Whose personal data this is: the patient its token names. LiveKit holds the metadata
    # sealed with that patient's key (the tenant's for anyone else), never in clear.
    livekit_name, current = await _in_livekit(livekit, tenant, name, identity)
    patient_ref = patient_ref_of(current.attributes)
    metadata = await seal(bus.phi, data.metadata or "", tenant=tenant.id, patient_ref=patient_ref)
    update = lk.UpdateParticipantRequest(
        room=livekit_name,
        identity=identity,
        name=data.name or "",
        metadata=metadata,
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
        metadata=metadata if data.metadata is not None else None,
        attributes=data.attributes,
        permission=permission,
        patient_ref=patient_ref,
    )
    await record(pool, event, tenant=tenant.id, key=name, phi=bus.phi)
    return await _view(bus.phi, seen, [track_row(t, seen) for t in info.tracks])


HANDLERS = [list_participants, get_participant, remove_participant, mute_track, update_participant]
