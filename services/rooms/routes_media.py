"""Egress (recording and streaming a room, F2) and ingress (bringing a stream in, F3).

Both need LiveKit's egress/ingress services connected to the LiveKit server; without them the
answer is a 503 that says so (docs/rooms.md tells how to run them).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import asyncpg
from litestar import delete, get, post
from litestar.params import JSONBody, Parameter
from litestar.types import ControllerRouterHandler
from livekit import api as lk
from livekit.protocol import egress as lk_egress

from services.rooms import store
from services.rooms.edges import LiveKitDep, bad_request, record
from services.rooms.errors import EgressUnavailableError, RoomNotFoundError, responses
from services.rooms.livekit_client import EGRESS_HELP, calling, find_room
from services.rooms.media_core import EgressRow, IngressRow
from services.rooms.privacy import opened
from services.rooms.requests import RequestError, egress_request, ingress_request
from services.rooms.schemas import (
    CreateIngressRequest,
    EgressList,
    EgressView,
    IngressCreatedView,
    IngressList,
    IngressView,
    StartEgressRequest,
)
from shared.events.rooms import (
    EgressRequested,
    EgressStopRequested,
    IngressCreated,
    IngressDeleted,
)
from shared.http import BusDep, CallerTenant, NotFoundError, PoolDep, SettingsDep
from shared.idempotency import idempotent
from shared.livekit_proto import enum_name
from shared.naming import ROOM_NAME, livekit_room

RoomFilter = Annotated[
    str | None, Parameter(pattern=ROOM_NAME.pattern, description="Only this room")
]


def _status(info: lk.EgressInfo) -> str:
    return enum_name(lk_egress.EgressStatus, info.status, "EGRESS_")


@post(
    "/v1/egress/start",
    operation_id="startEgress",
    status_code=201,
    summary="Record or stream a room (or one track)",
    description="Room composite to an MP4/OGG file, HLS segments or RTMP streams, or one "
    "track to a file. Files go under <tenant>/<room>/ in the egress service's storage.",
    responses=responses(400, 404),
)
async def start_egress(
    data: JSONBody[StartEgressRequest],
    tenant: CallerTenant,
    pool: PoolDep,
    livekit: LiveKitDep,
    settings: SettingsDep,
) -> EgressView:
    name = livekit_room(tenant.id, data.room)
    try:
        request, outputs = egress_request(tenant.id, data.room, name, data)
    except RequestError as error:
        raise bad_request(error) from None
    if await find_room(livekit, name) is None:
        raise RoomNotFoundError(f"no open room {data.room!r}")
    # Asking for a listing first names a missing egress service at once; a start would wait.
    async with calling():
        await livekit.egress.list_egress(lk.ListEgressRequest(room_name=name, active=True))
    try:
        async with asyncio.timeout(settings.rooms_egress_timeout), calling():
            if isinstance(request, lk.TrackEgressRequest):
                info = await livekit.egress.start_track_egress(request)
            else:
                info = await livekit.egress.start_room_composite_egress(request)
    except TimeoutError:
        raise EgressUnavailableError(
            f"no egress worker answered within {settings.rooms_egress_timeout}s: {EGRESS_HELP}"
        ) from None
    event = EgressRequested(
        room=data.room,
        egress_id=info.egress_id,
        kind=data.kind,
        outputs=outputs,
        track_sid=data.track_sid or "",
        room_sid=info.room_id,
        status=_status(info),
    )
    await record(pool, event, tenant=tenant.id, key=data.room)
    return EgressView.of(await _egress_row(pool, tenant.id, info.egress_id))


@post(
    "/v1/egress/{egress_id:str}/stop",
    operation_id="stopEgress",
    status_code=200,
    summary="Stop an egress",
    responses=responses(400, 404),
)
async def stop_egress(
    egress_id: str, tenant: CallerTenant, pool: PoolDep, livekit: LiveKitDep
) -> EgressView:
    known = await store.tenant_row(pool, EgressRow, tenant.id, egress_id)
    if known is None:
        raise NotFoundError("no such egress", code="egress_not_found")
    async with calling(not_found=NotFoundError("no such egress", code="egress_not_found")):
        info = await livekit.egress.stop_egress(lk.StopEgressRequest(egress_id=egress_id))
    event = EgressStopRequested(room=known.room, egress_id=egress_id, status=_status(info))
    await record(pool, event, tenant=tenant.id, key=known.room)
    return EgressView.of(await _egress_row(pool, tenant.id, egress_id))


async def _egress_row(pool: asyncpg.Pool, tenant: str, egress_id: str) -> EgressRow:
    """The row an action just recorded (the projection wrote it in the action's transaction)."""
    row = await store.tenant_row(pool, EgressRow, tenant, egress_id)
    if row is None:
        raise NotFoundError("no such egress", code="egress_not_found")
    return row


@get("/v1/egress", operation_id="listEgress", summary="List egress", responses=responses(400))
async def list_egress(
    tenant: CallerTenant,
    pool: PoolDep,
    room: RoomFilter = None,
    active: Annotated[
        bool | None, Parameter(description="Only running ones (or only ended)")
    ] = None,
) -> EgressList:
    rows = await store.egresses(pool, tenant.id, room, active)
    return EgressList(egress=[EgressView.of(row) for row in rows])


@post(
    "/v1/ingress",
    operation_id="createIngress",
    status_code=201,
    summary="Create an ingress: an RTMP/WHIP endpoint, or a URL to pull, into a room",
    description="The answer carries the URL and stream key to push to; the key is shown only here.",
    responses=responses(400),
)
async def create_ingress(
    data: JSONBody[CreateIngressRequest],
    tenant: CallerTenant,
    pool: PoolDep,
    livekit: LiveKitDep,
    bus: BusDep,
) -> IngressCreatedView:
    try:
        request = ingress_request(livekit_room(tenant.id, data.room), data)
    except RequestError as error:
        raise bad_request(error) from None
    async with calling():
        info = await livekit.ingress.create_ingress(request)
    event = IngressCreated(
        room=data.room,
        ingress_id=info.ingress_id,
        input_type=data.input_type,
        participant_identity=data.participant_identity,
        name=info.name,
        url=info.url,
    )
    await record(pool, event, tenant=tenant.id, key=data.room, phi=bus.phi)
    row = await store.tenant_row(pool, IngressRow, tenant.id, info.ingress_id)
    if row is None:
        raise NotFoundError("no such ingress", code="ingress_not_found")
    view = IngressView.of(await opened(bus.phi, row))
    return IngressCreatedView(
        **{f: getattr(view, f) for f in view.__struct_fields__}, stream_key=info.stream_key
    )


@delete(
    "/v1/ingress/{ingress_id:str}",
    operation_id="deleteIngress",
    status_code=204,
    summary="Delete an ingress",
    responses=responses(400, 404),
)
async def delete_ingress(
    ingress_id: str, tenant: CallerTenant, pool: PoolDep, livekit: LiveKitDep
) -> None:
    known = await store.tenant_row(pool, IngressRow, tenant.id, ingress_id)
    if known is None or known.deleted_at is not None:
        raise NotFoundError("no such ingress", code="ingress_not_found")
    async with calling(not_found=NotFoundError("no such ingress", code="ingress_not_found")):
        await livekit.ingress.delete_ingress(lk.DeleteIngressRequest(ingress_id=ingress_id))
    event = IngressDeleted(room=known.room, ingress_id=ingress_id)
    await record(pool, event, tenant=tenant.id, key=known.room)


@get("/v1/ingress", operation_id="listIngress", summary="List ingress", responses=responses(400))
async def list_ingress(
    tenant: CallerTenant, pool: PoolDep, bus: BusDep, room: RoomFilter = None
) -> IngressList:
    rows = await store.ingresses(pool, tenant.id, room)
    return IngressList(ingress=[IngressView.of(await opened(bus.phi, row)) for row in rows])


# LiveKit names an egress or ingress itself: a retry after a 5xx whose LiveKit call did succeed
# (an egress worker answering after our timeout) can start a second one (docs/rooms.md).
HANDLERS: list[ControllerRouterHandler] = [
    idempotent(start_egress),
    stop_egress,
    list_egress,
    idempotent(create_ingress),
    delete_ingress,
    list_ingress,
]
