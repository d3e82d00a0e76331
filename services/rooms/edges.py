"""What every rooms endpoint shares: path checks, the LiveKit client, and recording an action
(its read-model rows and its event in one transaction, through the outbox)."""

from __future__ import annotations

from typing import Any

import asyncpg
from litestar.datastructures import State
from litestar.di import NamedDependency
from livekit import api as lk

from services.rooms import store
from services.rooms.errors import InvalidNameError
from services.rooms.requests import RequestError
from shared.events import Event
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
    pool: asyncpg.Pool,
    event: Event | None,
    *,
    tenant: str,
    key: str,
    rows: Any = (),
    phi: Phi | None = None,
) -> list[Any]:
    """Write the rows an action changed and the event announcing it, atomically; returns the
    rows as written.

    ``rows`` are ``(kind, key, rule)`` triples: the row is loaded under its lock and replaced
    by ``rule(row)`` (None: left as it is), so a webhook projected meanwhile is merged, not
    overwritten. An event with personal fields needs ``phi`` (it is sealed in the outbox).
    """
    written = []
    async with pool.acquire() as conn, conn.transaction():
        for kind, row_key, rule in rows:
            before = await store.load(conn, kind, row_key)
            after = rule(before)
            if after is not None:
                await store.change(conn, before, after)
            written.append(after)
        if event is not None:
            await add_to_outbox(conn, event, source=SOURCE, tenant=tenant, key=key, phi=phi)
    return written
