"""The ``recorder`` egress backend (``MEDIAI_EGRESS_BACKEND=recorder``): the API records the
request and MediAI's recorder (``services/recorder``) acts on it from the log, once the patient
consented; no LiveKit Egress is asked (docs/recording.md)."""

from __future__ import annotations

import uuid

import asyncpg

from services.rooms.edges import bad_request, record
from services.rooms.requests import RequestError
from services.rooms.schemas import StartEgressRequest
from shared.events.rooms import EgressRequested, EgressStopRequested

BACKEND = "recorder"
OUTPUT = "ogg"


def check(request: StartEgressRequest) -> None:
    """What the recorder makes: the room's audio, mixed, as one Opus/OGG file."""
    if request.kind != "room_composite" or request.output != OUTPUT:
        raise RequestError(
            "this deployment records rooms with MediAI's recorder: use kind room_composite "
            "and output ogg (the room's audio, after the patient's consent)",
            "invalid_output",
        )


async def start(pool: asyncpg.Pool, tenant: str, data: StartEgressRequest) -> str:
    """Record the request; the recorder starts when the patient consents. Returns its id."""
    try:
        check(data)
    except RequestError as error:
        raise bad_request(error) from None
    egress_id = f"EG_rec_{uuid.uuid4().hex[:16]}"
    event = EgressRequested(
        room=data.room,
        egress_id=egress_id,
        kind=data.kind,
        outputs=[OUTPUT],
        status="starting",
        backend=BACKEND,
    )
    await record(pool, event, tenant=tenant, key=data.room)
    return egress_id


async def stop(pool: asyncpg.Pool, tenant: str, room: str, egress_id: str) -> None:
    """Ask the recorder to stop (it keeps what it recorded and ends the egress)."""
    event = EgressStopRequested(room=room, egress_id=egress_id, status="ending")
    await record(pool, event, tenant=tenant, key=room)
