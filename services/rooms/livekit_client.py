"""The LiveKit server API as the rooms service uses it: one client, LiveKit's errors mapped to
ours, and LiveKit's objects turned into read-model rows."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import aiohttp
from livekit import api as lk
from livekit.api.twirp_client import ServerError
from livekit.protocol import models as lk_models

from services.rooms.core import ParticipantRow, RoomRow
from services.rooms.errors import (
    EgressUnavailableError,
    IngressUnavailableError,
    LiveKitUnavailableError,
    RemoteUnmuteDisabledError,
)
from services.rooms.track_core import TrackRow
from shared.http import ApiError, NotFoundError
from shared.livekit_proto import enum_name, from_unix
from shared.naming import tenant_room

log = logging.getLogger(__name__)

EGRESS_HELP = (
    "no LiveKit egress service is connected to the LiveKit server, so rooms cannot be recorded "
    "or streamed; run LiveKit Egress next to the server (see docs/rooms.md)"
)
INGRESS_HELP = (
    "no LiveKit ingress service is connected to the LiveKit server, so external streams cannot "
    "be brought into rooms; run LiveKit Ingress next to the server (see docs/rooms.md)"
)


def _message(error: ServerError) -> str:
    return error.message.removeprefix("twirp error unknown: ")


@contextlib.asynccontextmanager
async def calling(
    not_found: ApiError | Callable[[str], ApiError] | None = None,
) -> AsyncIterator[None]:
    """Map LiveKit's errors: not found -> ``not_found`` (404; a function of LiveKit's message
    when what is missing depends on it), a missing egress or ingress service -> 503 naming it,
    remote unmute turned off -> 403, bad input or a failed precondition -> 400, anything else
    -> 503."""
    try:
        yield
    except ServerError as error:
        message = _message(error)
        if "egress not connected" in message:
            raise EgressUnavailableError(EGRESS_HELP) from None
        if "ingress not connected" in message:
            raise IngressUnavailableError(INGRESS_HELP) from None
        if error.code == "not_found":
            if callable(not_found):
                raise not_found(message) from None
            raise (not_found or NotFoundError(message)) from None
        if "remote unmute not enabled" in message:
            raise RemoteUnmuteDisabledError(
                "LiveKit is set not to unmute a participant's track for them "
                "(room.enable_remote_unmute): the participant unmutes it"
            ) from None
        # A request LiveKit will not do as it stands (its failed precondition is not an outage).
        refused = ("invalid_argument", "malformed", "out_of_range", "already_exists")
        if error.code in (*refused, "failed_precondition"):
            raise ApiError(
                f"LiveKit refused the request: {message}", code="livekit_refused"
            ) from None
        log.warning("LiveKit API error %s (%s)", error.code, error.status)
        raise LiveKitUnavailableError(f"LiveKit could not do it: {message}") from None
    except (aiohttp.ClientError, TimeoutError) as error:
        log.warning("LiveKit API unreachable: %s", type(error).__name__)
        raise LiveKitUnavailableError("the LiveKit server is unreachable; retry shortly") from None


def room_row(room: lk_models.Room) -> RoomRow:
    tenant, name = tenant_room(room.name)
    return RoomRow(
        sid=room.sid,
        tenant=tenant,
        name=name,
        livekit_name=room.name,
        created_at=from_unix(room.creation_time_ms) or from_unix(room.creation_time),
        empty_timeout=room.empty_timeout,
        departure_timeout=room.departure_timeout,
        max_participants=room.max_participants,
        metadata=room.metadata,
    )


def participant_row(info: lk_models.ParticipantInfo, room: RoomRow) -> ParticipantRow:
    return ParticipantRow(
        sid=info.sid,
        room_sid=room.sid,
        tenant=room.tenant,
        room=room.name,
        identity=info.identity,
        name=info.name,
        kind=enum_name(lk_models.ParticipantInfo.Kind, info.kind),
        metadata=info.metadata,
        joined_at=from_unix(info.joined_at_ms) or from_unix(info.joined_at),
    )


def track_row(track: lk_models.TrackInfo, participant: ParticipantRow) -> TrackRow:
    return TrackRow(
        sid=track.sid,
        participant_sid=participant.sid,
        room_sid=participant.room_sid,
        tenant=participant.tenant,
        type=enum_name(lk_models.TrackType, track.type),
        source=enum_name(lk_models.TrackSource, track.source),
        name=track.name,
        mime_type=track.mime_type,
        muted=track.muted,
    )


async def find_room(api: lk.LiveKitAPI, livekit_name: str) -> lk_models.Room | None:
    """The room in LiveKit now (authoritative, unlike the read model), or None."""
    async with calling():
        listing = await api.room.list_rooms(lk.ListRoomsRequest(names=[livekit_name]))
    return listing.rooms[0] if listing.rooms else None
