"""A 3-node NATS cluster (R3 streams): the leader of the events stream SIGKILLed in the middle
of a burst of webhooks and agent dispatches, then started again. No acknowledged event is lost;
publishers and consumers carry on through the election."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from deploy.nats import stream_leader
from services.rooms.projection import READ_MODEL as ROOMS_READ_MODEL
from shared import subjects
from shared.events import EVENTS_STREAM as EVENTS
from shared.events.agents import AgentDispatchRequested
from shared.events.rooms import ParticipantJoined
from tests.faults.support import (
    OUTAGE_SECONDS,
    FaultStack,
    Figures,
    Sent,
    dead_letters,
    fault_stack,
    inbox_count,
    now_seconds,
    participant_hook,
    send_all,
    stored_events,
    unique,
)
from tests.support import eventually, until

pytestmark = pytest.mark.livekit

WEBHOOKS = 1000
DISPATCHES = 40
KILL_AFTER = 300  # acknowledged webhooks before the leader is killed
EVENTS_STREAM = subjects.stream_name(EVENTS)
OPENAI = {
    "stt": "openai/gpt-4o-mini-transcribe",
    "llm": "openai/gpt-4o-mini",
    "tts": "openai/gpt-4o-mini-tts",
}


@pytest.fixture(scope="module")
async def faulty() -> AsyncIterator[FaultStack]:
    # No agent workers (pool 0): every dispatch is handed to LiveKit (CreateDispatch) and, with
    # nobody to take it, failed by the sweeper at its deadline. That end state proves the
    # dispatcher's consumers and sweeper carried on, without agent processes on a small machine.
    async with fault_stack(
        ["webhooks", "rooms", "dispatcher"],
        nats_nodes=3,
        rooms_reconcile_interval=0,
        agent_pool_min=0,
        agent_pool_max=0,
        agent_dispatch_deadline=5,
    ) as running:
        yield running


async def test_stream_leader_sigkilled_mid_burst_loses_no_acknowledged_event(
    faulty: FaultStack,
) -> None:
    settings, supervisor = faulty.settings, faulty.supervisor
    assert {p.name for p in supervisor.parts} >= {"nats-1", "nats-2", "nats-3"}
    nc, js = await faulty.js()
    info = await js.stream_info(EVENTS_STREAM)
    assert info.config.num_replicas == 3
    at = now_seconds()
    hooks = [
        participant_hook(
            "participant_joined", faulty.tenant, unique("room"), unique("PA"), at=at, joined_at=at
        )
        for _ in range(WEBHOOKS)
    ]
    sent = Sent()
    dispatched: list[tuple[int, str, float]] = []  # status, dispatch id, when

    restarted = asyncio.Event()
    rooms: list[str] = []

    async def dispatch_all(http: httpx.AsyncClient) -> None:
        """Dispatch at a steady pace, before, during and after the failover, until the killed
        node is back and ``DISPATCHES`` were sent; each dispatch as a careful client sends it:
        one Idempotency-Key, retried on a 503 or no answer until it is accepted."""
        while len(rooms) < DISPATCHES or not restarted.is_set():
            room = unique("consulta").replace("_", "-")
            rooms.append(room)
            key = str(uuid.uuid4())
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    answer = await http.post(
                        "/v1/agents",
                        json={"room": room, **OPENAI},
                        headers={"Idempotency-Key": key},
                    )
                    status = answer.status_code
                except httpx.TimeoutException:
                    status = 0
                dispatched.append(
                    (
                        status,
                        answer.json().get("id", "") if status == 202 else room,
                        time.monotonic(),
                    )
                )
                if status == 202:
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(0.3)

    try:
        async with faulty.client(authenticated=False) as livekit, faulty.client() as http:
            webhooks = asyncio.create_task(send_all(livekit, hooks, settings, sent, concurrency=8))
            dispatches = asyncio.create_task(dispatch_all(http))
            await until(lambda: len(sent.acknowledged) >= KILL_AFTER, timeout=120)
            leader = await stream_leader(settings, EVENTS_STREAM)
            await supervisor.kill(leader)
            killed_at = time.monotonic()
            acknowledged_at_kill = len(sent.acknowledged)
            new_leader = await stream_leader(settings, EVENTS_STREAM, timeout=30)
            elected = time.monotonic() - killed_at
            await asyncio.sleep(max(0.0, OUTAGE_SECONDS - elected))  # the node stays dead
            await supervisor.start_again(leader)
            restarted.set()
            await asyncio.wait_for(webhooks, timeout=300)
            await asyncio.wait_for(dispatches, timeout=300)
            accepted = [d for d in dispatched if d[0] == 202]
            pool = await asyncpg.connect(settings.database_url)
            try:

                async def rooms_caught_up() -> bool:
                    applied = await inbox_count(pool, ROOMS_READ_MODEL.durable, sent.acknowledged)
                    return applied == len(sent.acknowledged)

                await eventually(rooms_caught_up, timeout=120)
                applied_rooms = await inbox_count(pool, ROOMS_READ_MODEL.durable, sent.acknowledged)
            finally:
                await pool.close()

            async def all_failed_at_deadline() -> bool:
                states = [
                    (await http.get(f"/v1/agents/{dispatch_id}")).json().get("state")
                    for _, dispatch_id, _ in accepted
                ]
                return all(state == "failed" for state in states)

            await eventually(all_failed_at_deadline, timeout=60, step=0.5)
        # How long the publishers went without an acknowledgement across the failover.
        times = sorted(sent.acknowledged_at)
        around = [max(t for t in times if t <= killed_at)] + [t for t in times if t > killed_at]
        publish_gap = max(later - earlier for earlier, later in itertools.pairwise(around))
        stored_hooks = {e.id for e in await stored_events(js, ParticipantJoined, faulty.tenant)}
        requested = await stored_events(js, AgentDispatchRequested, faulty.tenant)
        stored_dispatches = {e.data.dispatch_id for e in requested}  # type: ignore[union-attr]
        per_room = Counter(e.data.room for e in requested)  # type: ignore[union-attr]
        after = await js.stream_info(EVENTS_STREAM)
        dead = await dead_letters(js)
    finally:
        await nc.close()

    lost_hooks = [i for i in sent.acknowledged if i not in stored_hooks]
    lost_dispatches = [d for _, d, _ in accepted if d not in stored_dispatches]
    statuses: dict[int, int] = {}
    for status, _, _ in dispatched:
        statuses[status] = statuses.get(status, 0) + 1
    Figures(
        "nats-cluster-leader-sigkill",
        sent=len(sent.sent) + len(dispatched),
        acknowledged=len(sent.acknowledged) + len(accepted),
        stored=len(stored_hooks & set(sent.sent)) + len(stored_dispatches),
        applied={"rooms": applied_rooms, "dispatcher_failed_at_deadline": len(accepted)},
        dead_lettered=dead,
        # The cluster heals by itself (an election), before the node is back: its recovery is
        # how long publishers went unacknowledged.
        recovery_seconds=publish_gap,
        extra={
            "killed": leader,
            "new_leader": new_leader,
            "election": f"{elected:.1f}s",
            "acked_at_kill": acknowledged_at_kill,
            "dispatch_answers": dict(sorted(statuses.items())),
            "webhook_answers": dict(sorted(sent.statuses.items())),
            "lost": len(lost_hooks) + len(lost_dispatches),
        },
    ).report()
    assert new_leader != leader
    assert not lost_hooks, f"{len(lost_hooks)} acknowledged webhooks missing from the stream"
    assert not lost_dispatches, f"{len(lost_dispatches)} accepted dispatches missing"
    assert len(sent.acknowledged) == WEBHOOKS and stored_hooks == set(sent.sent)
    # Every dispatch accepted in the end, each once: one request per room on the log.
    assert len(accepted) == len(rooms) and per_room == Counter(rooms), per_room
    assert set(statuses) <= {202, 503}, statuses  # never a 500, never a hang
    assert any(when > killed_at + elected for status, _, when in dispatched if status == 202)
    assert after.cluster is not None and len(after.cluster.replicas or []) == 2
    assert dead == 0
