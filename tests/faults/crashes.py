"""What the crash-point cases share: arming a crash point in one service of a fault stack,
seeing it die there, starting it again, waiting until a consumer has settled a message, and the
dispatcher's effects in LiveKit."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import nats.js.errors
from livekit import api as lk
from nats.js import JetStreamContext

from services import http_services
from shared.consumer import ConsumerSpec
from shared.crashpoints import CRASH_EXIT_CODE, VARIABLE
from shared.naming import livekit_room
from tests.faults.support import FaultStack, unique
from tests.support import eventually


async def arm(faulty: FaultStack, service: str, point: str) -> None:
    """``service`` running with the crash point ``point`` armed: started again with it, unless
    it already runs so (the stack may arm a point from the start, which saves a restart)."""
    supervisor = faulty.supervisor
    if supervisor.pid(service) is not None:
        if supervisor.part(service).env.get(VARIABLE) == point:
            return
        await supervisor.stop_part(service)
    await supervisor.start_again(service, env={VARIABLE: point})


async def died_at(faulty: FaultStack, service: str, point: str, timeout: float = 30) -> None:
    """Wait until ``service`` exits at ``point``: its exit code and its last log line say so."""
    part = faulty.supervisor.part(service)
    assert part.process is not None
    assert await asyncio.wait_for(part.process.wait(), timeout) == CRASH_EXIT_CODE
    log = faulty.supervisor.log_path(part).read_text(errors="replace")
    assert f"crash point {point} reached" in log


async def start_unarmed(faulty: FaultStack, service: str) -> None:
    await faulty.supervisor.start_again(service, env={VARIABLE: ""})


async def running(faulty: FaultStack, *services: str) -> None:
    """Start those of ``services`` that a case before this one left stopped."""
    for service in services:
        if faulty.supervisor.pid(service) is None:
            await start_unarmed(faulty, service)


async def alone(faulty: FaultStack, service: str) -> None:
    """Stop every service of the stack but ``service`` (the key service too): every service runs
    an outbox relay over the one outbox table, so this makes ``service``'s relay the one that
    publishes a row. ``running`` starts the others again when a case needs them."""
    supervisor = faulty.supervisor
    others = [p.name for p in supervisor.parts if p.name in http_services() and p.name != service]
    await asyncio.gather(*(supervisor.stop_part(s) for s in others if supervisor.pid(s)))
    await running(faulty, service)


async def settled(
    js: JetStreamContext, spec: ConsumerSpec[Any], sequence: int, timeout: float = 60
) -> None:
    """Wait until the durable consumer ``spec`` has acknowledged everything up to the stream
    sequence ``sequence`` and holds nothing unacknowledged."""

    async def done() -> bool:
        try:
            info = await js.consumer_info(spec.stream, spec.durable)
        except nats.js.errors.NotFoundError:
            return False  # the service has not created its consumer yet
        return (
            info.ack_floor.stream_seq >= sequence
            and info.num_ack_pending == 0
            and info.num_pending == 0
        )

    await eventually(done, timeout=timeout, step=0.2)


# -- the dispatcher and LiveKit ------------------------------------------------------------------


def livekit(faulty: FaultStack) -> lk.LiveKitAPI:
    s = faulty.settings
    return lk.LiveKitAPI(s.livekit_url, s.livekit_api_key, s.livekit_api_secret)


async def open_room(faulty: FaultStack) -> str:
    """A consultation room open in LiveKit, as a clinic opens it before dispatching an agent
    (LiveKit would close an empty room made by the dispatch alone before the redelivery)."""
    room = unique("consulta").replace("_", "-")
    async with livekit(faulty) as api:
        await api.room.create_room(
            lk.CreateRoomRequest(name=livekit_room(faulty.tenant, room), empty_timeout=600)
        )
    return room


async def livekit_dispatches(faulty: FaultStack, room: str) -> list[lk.AgentDispatch]:
    """Our agent's dispatches in the room (LiveKit also lists its automatic one, unnamed)."""
    async with livekit(faulty) as api:
        listed = await api.agent_dispatch.list_dispatch(livekit_room(faulty.tenant, room))
    return [d for d in listed if d.agent_name == faulty.settings.agent_name]


async def dispatch_state(http: httpx.AsyncClient, dispatch_id: str) -> str:
    answer = await http.get(f"/v1/agents/{dispatch_id}")
    return str(answer.json().get("state", "")) if answer.status_code == 200 else ""
