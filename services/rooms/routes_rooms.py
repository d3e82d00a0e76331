"""Rooms: create, list, get, delete, and data messages into a room (RF2, RF5)."""

from __future__ import annotations

from datetime import UTC, datetime

from litestar import Response, delete, get, post
from litestar.params import JSONBody
from litestar.types import ControllerRouterHandler
from livekit import api as lk

from services.rooms import core, store
from services.rooms.core import RoomRow
from services.rooms.edges import LiveKitDep, bad_request, checked_room, record
from services.rooms.errors import RoomNotFoundError, responses
from services.rooms.livekit_client import calling, find_room, room_row
from services.rooms.privacy import opened
from services.rooms.requests import RequestError, data_payload
from services.rooms.schemas import (
    CreateRoomRequest,
    DataSentView,
    RoomList,
    RoomView,
    SendDataRequest,
)
from shared.events.reconciliation import RoomFound
from shared.events.rooms import DataMessageSent, RoomCreated, RoomDeleted
from shared.http import BusDep, CallerTenant, PoolDep
from shared.idempotency import idempotent
from shared.naming import livekit_room


def _no_room(name: str) -> RoomNotFoundError:
    return RoomNotFoundError(f"no open room {name!r}")


@post(
    "/v1/rooms",
    operation_id="createRoom",
    summary="Create a room",
    status_code=201,
    description="Creates the room in LiveKit (201). A room of that name that is already open "
    "is returned as it is (200), so clients may call this before every consultation.",
    responses=responses(400),
)
async def create_room(
    data: JSONBody[CreateRoomRequest],
    tenant: CallerTenant,
    pool: PoolDep,
    livekit: LiveKitDep,
    bus: BusDep,
) -> Response[RoomView]:
    name = livekit_room(tenant.id, data.name)
    existing = await find_room(livekit, name)
    room = existing
    if room is None:
        async with calling():
            room = await livekit.room.create_room(
                lk.CreateRoomRequest(
                    name=name,
                    empty_timeout=data.empty_timeout or 0,
                    departure_timeout=data.departure_timeout or 0,
                    max_participants=data.max_participants or 0,
                    metadata=data.metadata,
                )
            )
    seen = room_row(room)
    if existing is None:
        created = _created(data.name, seen)
        await record(pool, created, tenant=tenant.id, key=data.name, phi=bus.phi)
    else:
        # Open before: the read model may not have it yet (its room_started late or dropped).
        found = _found(data.name, seen)
        known = await store.tenant_row(pool, RoomRow, tenant.id, seen.sid)
        if known is not None:
            known = await opened(bus.phi, known)  # compared as LiveKit shows it, in clear
        if known is None or core.on_room_found(known, found, tenant.id) != known:
            await record(pool, found, tenant=tenant.id, key=data.name, phi=bus.phi)
    row = await store.tenant_row(pool, RoomRow, tenant.id, seen.sid) or seen
    present = await store.count_present(pool, row.sid)
    view = RoomView.of(await opened(bus.phi, row), present)
    return Response(view, status_code=200 if existing else 201)


def _created(name: str, seen: RoomRow) -> RoomCreated:
    return RoomCreated(
        room=name,
        room_sid=seen.sid,
        empty_timeout=seen.empty_timeout,
        departure_timeout=seen.departure_timeout,
        max_participants=seen.max_participants,
        metadata=seen.metadata,
        created_at=seen.created_at,
    )


def _found(name: str, seen: RoomRow) -> RoomFound:
    return RoomFound(
        room=name,
        room_sid=seen.sid,
        observed_at=datetime.now(UTC),
        created_at=seen.created_at,
        empty_timeout=seen.empty_timeout,
        departure_timeout=seen.departure_timeout,
        max_participants=seen.max_participants,
        metadata=seen.metadata,
    )


@get("/v1/rooms", operation_id="listRooms", summary="List the open rooms", responses=responses())
async def list_rooms(tenant: CallerTenant, pool: PoolDep, bus: BusDep) -> RoomList:
    rows = await store.open_rooms(pool, tenant.id)
    return RoomList(rooms=[RoomView.of(await opened(bus.phi, r), n) for r, n in rows])


@get(
    "/v1/rooms/{name:str}",
    operation_id="getRoom",
    summary="Get an open room",
    responses=responses(400, 404),
)
async def get_room(name: str, tenant: CallerTenant, pool: PoolDep, bus: BusDep) -> RoomView:
    row = await store.open_room(pool, tenant.id, checked_room(name))
    if row is None:
        raise _no_room(name)
    return RoomView.of(await opened(bus.phi, row), await store.count_present(pool, row.sid))


@delete(
    "/v1/rooms/{name:str}",
    operation_id="deleteRoom",
    status_code=204,
    summary="Delete a room, disconnecting everyone in it",
    responses=responses(400, 404),
)
async def delete_room(name: str, tenant: CallerTenant, pool: PoolDep, livekit: LiveKitDep) -> None:
    checked_room(name)
    async with calling(not_found=_no_room(name)):
        await livekit.room.delete_room(lk.DeleteRoomRequest(room=livekit_room(tenant.id, name)))
    row = await store.open_room(pool, tenant.id, name)
    deleted = RoomDeleted(room=name, room_sid=row.sid if row else "")
    await record(pool, deleted, tenant=tenant.id, key=name)


@post(
    "/v1/rooms/{name:str}/data",
    operation_id="sendData",
    status_code=200,
    summary="Send a data message to everyone in a room, or to chosen identities",
    description="Delivered to the participants' SDKs as a data packet with the given topic "
    "(see docs/rooms.md for the topics). The content is not recorded, only its size.",
    responses=responses(400, 404),
)
async def send_data(
    name: str,
    data: JSONBody[SendDataRequest],
    tenant: CallerTenant,
    pool: PoolDep,
    livekit: LiveKitDep,
) -> DataSentView:
    checked_room(name)
    try:
        payload = data_payload(data)
    except RequestError as error:
        raise bad_request(error) from None
    livekit_name = livekit_room(tenant.id, name)
    # LiveKit answers a send into a missing room only after a timeout: ask first.
    if await find_room(livekit, livekit_name) is None:
        raise _no_room(name)
    kind = lk.DataPacket.Kind.RELIABLE if data.reliable else lk.DataPacket.Kind.LOSSY
    async with calling(not_found=_no_room(name)):
        await livekit.room.send_data(
            lk.SendDataRequest(
                room=livekit_name,
                data=payload,
                kind=kind,
                topic=data.topic,
                destination_identities=data.destination_identities,
            )
        )
    event = DataMessageSent(
        room=name,
        topic=data.topic or "",
        destination_identities=data.destination_identities,
        reliable=data.reliable,
        size_bytes=len(payload),
    )
    await record(pool, event, tenant=tenant.id, key=name)
    return DataSentView(
        room=name,
        topic=data.topic,
        destination_identities=data.destination_identities,
        size_bytes=len(payload),
    )


# Creating a room is idempotent by its name already; the key makes a retry answer the first
# answer. Data messages are not created things: each send is delivered once, as asked.
HANDLERS: list[ControllerRouterHandler] = [
    idempotent(create_room),
    list_rooms,
    get_room,
    delete_room,
    send_data,
]
