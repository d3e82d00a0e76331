"""``POST /v1/agents`` with an Idempotency-Key (the fault matrix): sent twice, one agent joins the
room; retried after a NATS timeout whose publish did land, one dispatch."""

from __future__ import annotations

import os
import signal
import uuid
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
import msgspec
import nats
import pytest
from litestar.testing import AsyncTestClient
from livekit import api as lk
from livekit import rtc

from deploy.stack import StackState, nats_part
from deploy.supervisor import Supervisor
from services.dispatcher.app import create_app
from shared import subjects
from shared.bus import Bus, connect_bus, nats_options
from shared.config import Settings
from shared.events import CODEC
from shared.events.agents import AgentDispatchRequested, AgentSessionStarted
from shared.naming import livekit_room
from shared.tenants import authenticate, create_tenant
from tests.standin import OpenAIStandin
from tests.support import eventually, until
from tests.test_agent_e2e import OPENAI, Participant, following, new_room, registered_workers
from tests.test_webhooks import count_events, private_settings

__all__ = ["private_settings"]  # the fixture, shared with tests/test_webhooks.py

REPLAYED = "Idempotent-Replayed"


@pytest.fixture
async def standin(openai_standin: OpenAIStandin, bus: Bus) -> OpenAIStandin:
    await registered_workers(bus)
    openai_standin.reset()
    return openai_standin


@pytest.mark.livekit
async def test_post_agents_twice_with_one_key_puts_one_agent_in_the_room(
    api: httpx.AsyncClient,
    bus: Bus,
    pool: asyncpg.Pool,
    stack: StackState,
    tenant_key: str,
    settings: Settings,
    standin: OpenAIStandin,
) -> None:
    room = new_room()
    patient = await Participant.join(api, room, "patient-1")
    key = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"room": room, "role": "generic", **OPENAI}
    dispatch_id = ""
    try:
        async with following(bus, AgentSessionStarted) as events:
            first = await api.post("/v1/agents", json=body, headers=key)
            again = await api.post("/v1/agents", json=body, headers=key)
            assert first.status_code == again.status_code == 202, first.text
            dispatch_id = first.json()["id"]
            assert (REPLAYED not in first.headers, again.headers[REPLAYED]) == (True, "true")
            assert again.json() == first.json()
            started = await events.next(AgentSessionStarted, dispatch_id)
        await until(lambda: started.agent_identity in patient.room.remote_participants, 10)
        agents = [
            p.identity
            for p in patient.room.remote_participants.values()
            if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        ]
        assert agents == [started.agent_identity]
        assert [r["id"] for r in (await api.get("/v1/agents", params={"room": room})).json()] == [
            dispatch_id
        ]
        tenant = await authenticate(pool, tenant_key)
        assert tenant is not None
        async with lk.LiveKitAPI(
            stack.livekit_url, stack.livekit_api_key, stack.livekit_api_secret
        ) as livekit:
            dispatches = await livekit.agent_dispatch.list_dispatch(livekit_room(tenant.id, room))
        # (LiveKit adds its own automatic dispatch, of no agent name, to every new room.)
        assert [d.agent_name for d in dispatches if d.agent_name] == [settings.agent_name]
    finally:
        if dispatch_id:
            await api.delete(f"/v1/agents/{dispatch_id}")
        await patient.leave()


async def test_a_retry_after_a_nats_timeout_whose_publish_landed_makes_one_dispatch(
    private_settings: Settings,
) -> None:
    """NATS is frozen (SIGSTOP by pid) while the dispatcher publishes: no ack comes, and after
    its retries the dispatcher answers 503. But the publish was written to NATS's socket; once
    NATS runs again it lands. The client's retry with the same key must not make a second
    dispatch: it republishes the same event id, which JetStream drops, and answers with the
    dispatch the log holds."""
    settings = msgspec.structs.replace(
        private_settings,
        agent_pool_min=0,
        agent_pool_max=0,
        agent_name=f"nobody-{uuid.uuid4().hex[:6]}",  # no worker takes it: only the log matters
    )
    conn = await asyncpg.connect(settings.database_url)
    try:
        tenant, api_key = await create_tenant(conn, "Clínica da falha")
    finally:
        await conn.close()
    supervisor = Supervisor(settings.host, Path(settings.data_dir) / "logs")
    await supervisor.start(nats_part(settings))
    try:
        # The operator declares the streams (services may not create them).
        await (await connect_bus(settings, "tests", streams="create")).close()
        [part] = supervisor.parts
        assert part.process is not None
        headers = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": str(uuid.uuid4())}
        body = {"room": "consulta-falha", "role": "generic"}
        async with AsyncTestClient(app=create_app(settings), timeout=30) as client:
            os.kill(part.process.pid, signal.SIGSTOP)
            try:
                first = await client.post("/v1/agents", json=body, headers=headers)
            finally:
                os.kill(part.process.pid, signal.SIGCONT)
            assert first.status_code == 503, first.text
            assert first.json()["error"]["code"] == "bus_unavailable"

            nc = await nats.connect(**nats_options(settings))
            try:
                js = nc.jetstream()

                async def landed() -> bool:
                    return await count_events(js, AgentDispatchRequested, tenant.id) == 1

                await eventually(landed)  # the 503's publish did land
                retry = await client.post("/v1/agents", json=body, headers=headers)
                assert retry.status_code == 202, retry.text
                assert REPLAYED not in retry.headers  # a 5xx is not kept: it ran again
                dispatch_id = retry.json()["id"]
                assert await count_events(js, AgentDispatchRequested, tenant.id) == 1
                subject = subjects.type_filter(AgentDispatchRequested, tenant.id)[:-1]
                stored = await js.get_last_msg(
                    subjects.stream_name(AgentDispatchRequested.STREAM),
                    subject + subjects.token(dispatch_id),
                )
                event = CODEC.decode(stored.data or b"")
            finally:
                await nc.close()
            # The answer is the dispatch the log holds: the first attempt's, not a copy.
            assert isinstance(event.data, AgentDispatchRequested)
            assert event.data.dispatch_id == dispatch_id
            assert datetime.fromisoformat(retry.json()["requestedAt"]) == event.data.requested_at
            shown = await client.get(f"/v1/agents/{dispatch_id}", headers=headers)
            assert shown.status_code == 200
            listed = await client.get("/v1/agents", headers=headers)
            assert [d["id"] for d in listed.json()] == [dispatch_id]
    finally:
        await supervisor.stop()
