"""The dispatcher dies at a crash point (shared/crashpoints.py) and is started again: each time,
exactly one effect (one LiveKit dispatch, one dispatch on the log and in the read model)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from livekit import api as lk

from shared.crashpoints import CRASH_EXIT_CODE, VARIABLE
from shared.events.agents import AgentDispatched, AgentDispatchRequested
from shared.naming import livekit_room
from tests.faults.support import (
    FaultStack,
    Figures,
    dead_letters,
    fault_stack,
    stored_events,
    unique,
)
from tests.support import eventually

pytestmark = pytest.mark.livekit

OPENAI = {
    "stt": "openai/gpt-4o-mini-transcribe",
    "llm": "openai/gpt-4o-mini",
    "tts": "openai/gpt-4o-mini-tts",
}


@pytest.fixture(scope="module")
async def faulty() -> AsyncIterator[FaultStack]:
    # No agent workers: the effects counted are the dispatcher's own. A deadline long enough
    # for JetStream to redeliver what the dead process held (its ack wait, 30 s).
    async with fault_stack(
        ["dispatcher"], agent_pool_min=0, agent_pool_max=0, agent_dispatch_deadline=90
    ) as running:
        yield running


async def crash_at(faulty: FaultStack, point: str) -> None:
    """Restart the dispatcher armed with ``point``."""
    await faulty.supervisor.stop_part("dispatcher")
    await faulty.supervisor.start_again("dispatcher", env={VARIABLE: point})


async def died_at_the_crash_point(faulty: FaultStack, point: str) -> None:
    part = faulty.supervisor.part("dispatcher")
    assert part.process is not None
    assert await asyncio.wait_for(part.process.wait(), 30) == CRASH_EXIT_CODE
    log = faulty.supervisor.log_path(part).read_text(errors="replace")
    assert f"crash point {point} reached" in log


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


async def test_crash_after_livekit_dispatch_before_dispatched_is_one_livekit_dispatch(
    faulty: FaultStack,
) -> None:
    room = await open_room(faulty)
    await crash_at(faulty, "dispatcher.after_create_dispatch")
    async with faulty.client() as http:
        try:
            answer = await http.post("/v1/agents", json={"room": room, **OPENAI})
            status = answer.status_code
        except httpx.TransportError:
            status = 0
        # The launcher may reach the crash point before the HTTP edge has answered: then the
        # process dies under the request too (the gateway says 503).
        assert status in (202, 503), status
        await died_at_the_crash_point(faulty, "dispatcher.after_create_dispatch")
        assert len(await livekit_dispatches(faulty, room)) == 1  # LiveKit took it, then the crash
        restarted = time.monotonic()
        await faulty.supervisor.start_again("dispatcher", env={VARIABLE: ""})

        async def listed() -> list[str]:
            answer = await http.get("/v1/agents", params={"room": room})
            return [d["id"] for d in answer.json()]

        [dispatch_id] = await eventually(listed, timeout=30)

        async def dispatched() -> bool:
            return await dispatch_state(http, dispatch_id) == "dispatched"

        # The launcher gets the request again (after its ack wait) and finds LiveKit's dispatch.
        await eventually(dispatched, timeout=60, step=0.5)
        recovery = time.monotonic() - restarted
    nc, js = await faulty.js()
    try:
        announced = [
            e
            for e in await stored_events(js, AgentDispatched, faulty.tenant)
            if e.data.dispatch_id == dispatch_id  # type: ignore[union-attr]
        ]
        dead = await dead_letters(js)
    finally:
        await nc.close()
    in_livekit = await livekit_dispatches(faulty, room)
    Figures(
        "crash-after-create-dispatch",
        sent=1,
        acknowledged=int(status == 202),
        stored=len(announced),
        applied={"livekit_dispatches": len(in_livekit)},
        dead_lettered=dead,
        recovery_seconds=recovery,
        extra={"answer": status},
    ).report()
    assert len(in_livekit) == 1, "a second agent dispatch in the room"
    assert [e.data.livekit_dispatch_id for e in announced] == [in_livekit[0].id]  # type: ignore[union-attr]
    assert dead == 0


async def test_crash_after_publish_before_apply_is_one_dispatch(faulty: FaultStack) -> None:
    room = await open_room(faulty)
    key = str(uuid.uuid4())
    await crash_at(faulty, "dispatcher.after_publish_before_apply")
    async with faulty.client() as http:
        try:
            answer = await http.post(
                "/v1/agents", json={"room": room, **OPENAI}, headers={"Idempotency-Key": key}
            )
            status = answer.status_code
        except httpx.TransportError:
            status = 0
        assert status in (0, 502, 503)  # the process died before it could answer
        await died_at_the_crash_point(faulty, "dispatcher.after_publish_before_apply")
        restarted = time.monotonic()
        await faulty.supervisor.start_again("dispatcher", env={VARIABLE: ""})

        async def launched() -> list[dict[str, str]] | None:
            listed = (await http.get("/v1/agents", params={"room": room})).json()
            return listed if listed and listed[0]["state"] != "requested" else None

        # The request is on the log: the read model applies it and the launcher launches it.
        [dispatch] = await eventually(launched, timeout=60, step=0.5)
        recovery = time.monotonic() - restarted
        # The client's retry with its key while the dead run still holds it: refused, not run.
        retry = await http.post(
            "/v1/agents", json={"room": room, **OPENAI}, headers={"Idempotency-Key": key}
        )
    nc, js = await faulty.js()
    try:
        requested = [
            e
            for e in await stored_events(js, AgentDispatchRequested, faulty.tenant)
            if e.data.room == room  # type: ignore[union-attr]
        ]
    finally:
        await nc.close()
    in_livekit = await livekit_dispatches(faulty, room)
    Figures(
        "crash-after-publish-before-apply",
        sent=1,
        acknowledged=0,
        stored=len(requested),
        applied={"dispatcher": 1, "livekit_dispatches": len(in_livekit)},
        recovery_seconds=recovery,
        extra={"answer": status, "retry": retry.status_code},
    ).report()
    assert dispatch["state"] == "dispatched"
    assert [e.data.dispatch_id for e in requested] == [dispatch["id"]]  # type: ignore[union-attr]
    assert len(in_livekit) == 1
    assert retry.status_code == 409, retry.text
