"""What every rooms endpoint shares: path checks, the LiveKit client, and recording an action
(its event through the outbox, applied by the projection in the same transaction)."""

from __future__ import annotations

import asyncpg
from litestar.datastructures import State
from litestar.di import NamedDependency
from livekit import api as lk

from services.rooms.errors import InvalidNameError
from services.rooms.projection import APPLY, READ_MODEL, apply
from services.rooms.requests import RequestError
from shared.consumer import Delivery
from shared.db import Connection, projection
from shared.events import Envelope, Event, new_event_id
from shared.http import ApiError
from shared.naming import IDENTITY_RULE, ROOM_NAME_RULE, is_identity, is_room_name
from shared.outbox import add_to_outbox
from shared.phi import Phi

SOURCE = "mediai/rooms"
# ``livekit: LiveKitDep`` in a handler: the process's LiveKit server API client.
LiveKitDep = NamedDependency[lk.LiveKitAPI]


def checked_room(name: str) -> str:
    if not is_room_name(name):
        raise InvalidNameError(f"invalid room name: {ROOM_NAME_RULE}", code="invalid_room_name")
    return name


def checked_identity(identity: str) -> str:
    if not is_identity(identity):
        raise InvalidNameError(f"invalid identity: {IDENTITY_RULE}", code="invalid_identity")
    return identity


def bad_request(error: RequestError) -> ApiError:
    return ApiError(str(error), code=error.code)


def provide_livekit(state: State) -> lk.LiveKitAPI:
    client: lk.LiveKitAPI = state.livekit
    return client


async def record(
    pool: asyncpg.Pool, data: Event, *, tenant: str, key: str, phi: Phi | None = None
) -> Envelope:
    """Record an action LiveKit did: its event goes to the outbox and, in the same transaction,
    through the projection's own fold, so the caller reads its own write. An event with personal
    fields is sealed first (``phi``), so the outbox and the read model get the same tokens.

    The projection stays the read model's only writer, and applies the event once: the event id
    goes into the read-model consumer's inbox here (stream sequence 0: applied at the edge,
    before the log had it), so the consumer skips the event when the log delivers it. Every
    fold an action uses gives the same row whatever it is applied before or after (see
    ``core``), so a rebuild from the log, which applies it in log order, gives the same rows.
    """
    event_id = new_event_id()
    if phi is not None:
        data = await phi.seal_data(data, tenant=tenant)
    if type(data) not in APPLY:  # announces something the read model does not hold
        async with pool.acquire() as conn, conn.transaction():
            return await _outbox(conn, data, tenant=tenant, key=key, event_id=event_id, phi=phi)
    at_the_edge = Delivery.at_the_edge(READ_MODEL.durable)
    async with projection(pool, at_the_edge, event_id) as applying:
        assert applying is not None  # a fresh id is in nobody's inbox
        event = await _outbox(applying, data, tenant=tenant, key=key, event_id=event_id, phi=phi)
        await apply(applying, event)
    return event


async def _outbox(
    conn: Connection, data: Event, *, tenant: str, key: str, event_id: str, phi: Phi | None
) -> Envelope:
    return await add_to_outbox(
        conn, data, source=SOURCE, tenant=tenant, key=key, event_id=event_id, phi=phi
    )
