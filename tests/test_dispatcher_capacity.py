"""At capacity a dispatch is refused at once (503, Retry-After, the reason), never accepted to
fail at its deadline, and accepted again once a session ends: a private stack (its own NATS,
Postgres, LiveKit, token and dispatcher with a pool of one real agent worker taking one job),
the OpenAI-compatible stand-in as the provider."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from deploy.stack import Stack
from shared.bus import Bus, connect_bus
from shared.events.agents import AgentWorkerLoadReported
from tests.standin import OpenAIStandin
from tests.support import eventually, stack_settings
from tests.test_agent_e2e import OPENAI, dispatch, following, new_room, state_of

pytestmark = pytest.mark.livekit

DEADLINE = 10  # agent_dispatch_deadline: an accepted dispatch nobody takes fails after this


@pytest.fixture(scope="module")
async def full_stack(openai_standin: OpenAIStandin) -> AsyncIterator[Stack]:
    """One worker that takes one job: the capacity of the whole stack is one session.
    Not under pytest's tmp_path (see conftest.settings)."""
    data_dir = Path(tempfile.mkdtemp(prefix="mediai-capacity-"))
    services = ["token", "dispatcher"]
    settings = stack_settings(
        data_dir,
        services=tuple(services),
        openai_base_url=openai_standin.base_url,
        openai_api_key="standin-key",
        agent_pool_min=1,
        agent_pool_max=1,
        agent_jobs_per_worker=1,
        agent_dispatch_deadline=DEADLINE,
    )
    stack = Stack(settings, services=services)
    await stack.start()  # ready once the worker is registered with LiveKit
    try:
        yield stack
    finally:
        await stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
async def client(full_stack: Stack) -> AsyncIterator[tuple[Bus, httpx.AsyncClient]]:
    assert full_stack.state is not None
    bus = await connect_bus(full_stack.settings, "tests")
    async with httpx.AsyncClient(
        base_url=full_stack.state.gateway_url,
        headers={"Authorization": f"Bearer {full_stack.state.dev_api_key}"},
        timeout=10,
    ) as api:
        yield bus, api
    await bus.close()


async def test_a_burst_of_dispatches_takes_the_free_slots_and_no_more(
    client: tuple[Bus, httpx.AsyncClient], openai_standin: OpenAIStandin
) -> None:
    """Dispatches arriving in the same instant: each is checked against the others let through
    before it, not only against the rows already written (where a burst all found the same
    free slot, and the extra dispatches failed at their deadline)."""
    bus, api = client
    openai_standin.reset()
    answers = await asyncio.gather(
        *(
            api.post("/v1/agents", json={"room": new_room(), "role": "generic", **OPENAI})
            for _ in range(4)
        )
    )
    accepted = [a.json()["id"] for a in answers if a.status_code == 202]
    refused = [a.json()["error"]["code"] for a in answers if a.status_code == 503]
    assert len(accepted) == 1, [a.text for a in answers]
    assert refused == ["agents_at_capacity"] * 3
    await state_of(api, accepted[0], "joined", timeout=60)
    async with following(bus, AgentWorkerLoadReported) as reports:
        await api.delete(f"/v1/agents/{accepted[0]}")
        await state_of(api, accepted[0], "ended", timeout=60)
        await reports.next(AgentWorkerLoadReported, where=lambda d: d.active_jobs == 0, timeout=60)


async def test_a_dispatch_beyond_capacity_is_refused_at_once_and_taken_once_a_session_ends(
    client: tuple[Bus, httpx.AsyncClient], openai_standin: OpenAIStandin
) -> None:
    bus, api = client
    openai_standin.reset()
    first = await dispatch(api, room=new_room(), role="generic", **OPENAI)
    await state_of(api, first["id"], "joined", timeout=60)

    waiting_room = new_room()
    asked = time.monotonic()
    refused = await api.post("/v1/agents", json={"room": waiting_room, "role": "generic", **OPENAI})
    # At once: a refusal, not an acceptance that fails at the deadline.
    assert time.monotonic() - asked < DEADLINE
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["Retry-After"]) > 0
    error = refused.json()["error"]
    assert error["code"] == "agents_at_capacity"
    assert "capacity" in error["message"]
    assert error["details"] == [
        {
            "retryAfterSeconds": int(refused.headers["Retry-After"]),
            "workers": 1,
            "activeJobs": 1,
            "startingJobs": 0,
            "capacity": 1,
        }
    ]
    # Refused means nothing was accepted: no dispatch exists for that room.
    assert (await api.get("/v1/agents", params={"room": waiting_room})).json() == []

    async with following(bus, AgentWorkerLoadReported) as reports:
        await api.delete(f"/v1/agents/{first['id']}")
        await state_of(api, first["id"], "ended", timeout=60)
        await reports.next(AgentWorkerLoadReported, where=lambda d: d.active_jobs == 0, timeout=60)
    second = await dispatch(api, room=waiting_room, role="generic", **OPENAI)
    await state_of(api, second["id"], "joined", timeout=60)


async def test_a_worker_host_killed_outright_is_forgotten_within_seconds(
    client: tuple[Bus, httpx.AsyncClient], full_stack: Stack
) -> None:
    """The pool SIGKILLed with its worker (a host gone: nobody publishes their exit). The
    dispatcher stops counting the worker after three missed heartbeats, not three missed load
    reports (90 s), and refuses the next dispatch at once rather than accepting it to fail.
    Last in the module: the stack has no worker afterwards."""
    _, api = client
    await full_stack.supervisor.kill("pool")
    killed = time.monotonic()

    async def no_worker() -> bool:
        answer = await api.post(
            "/v1/agents", json={"room": new_room(), "role": "generic", **OPENAI}
        )
        return answer.status_code == 503 and answer.json()["error"]["code"] == "no_agent_worker"

    # Three beats of 2 s, and the last beat's age at the kill: about 6-8 s; 90 s before beats.
    await eventually(no_worker, timeout=20, step=1)
    print(f"worker forgotten {time.monotonic() - killed:.1f} s after its host was killed")
