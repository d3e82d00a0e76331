"""Agents under faults, in a consultation with the OpenAI-compatible stand-in (token, dispatcher
and its pool of one worker, usage every second): NATS killed when a session ends, and an agent
worker SIGKILLed while NATS is away (the agent's spool); ``POST /v1/agents`` sent twice with one
Idempotency-Key, and retried after a NATS timeout (NATS frozen while the dispatcher publishes):
one agent in the room each time. The worker is killed last: the cases after it would wait for
its replacement to start."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from shared.bus import Bus, connect_bus
from shared.events import Envelope
from shared.events.agents import (
    AgentDispatchFailed,
    AgentDispatchRequested,
    AgentSessionEnded,
    AgentSessionStarted,
    AgentUsageReported,
    AgentWorkerStarted,
)
from tests.faults.consultations import (
    agents_in,
    consultation_under_way,
    contiguous,
    journal_of,
    logged,
    once_back,
    released,
    unsent,
)
from tests.faults.crashes import livekit_dispatches
from tests.faults.support import (
    OUTAGE_SECONDS,
    FaultStack,
    Figures,
    dead_letters,
    fault_stack,
    stored_events,
)
from tests.standin import OpenAIStandin
from tests.support import eventually, until
from tests.test_agent_e2e import (
    OPENAI,
    Participant,
    alive_in_group,
    following,
    last_event,
    new_room,
    state_of,
)

pytestmark = pytest.mark.livekit

PERIOD = 1  # agent_usage_period: a report every second, so a case sees several
REPLAYED = "Idempotent-Replayed"
# A worker starting on a loaded 2-core machine takes up to a minute to register with LiveKit.
WORKER_START_SECONDS = 180.0


@pytest.fixture(scope="module")
async def faulty(openai_standin: OpenAIStandin) -> AsyncIterator[FaultStack]:
    async with fault_stack(
        ["token", "dispatcher"],
        openai_base_url=openai_standin.base_url,
        openai_api_key="standin-key",
        agent_usage_period=PERIOD,
        agent_pool_min=1,
        agent_pool_max=1,
        # Longer than a replacement worker's start, so a case right after a worker was killed
        # is not failed with no_worker while its replacement registers.
        agent_dispatch_deadline=int(WORKER_START_SECONDS),
    ) as running:
        yield running


@pytest.fixture
async def agents(
    faulty: FaultStack, openai_standin: OpenAIStandin
) -> AsyncIterator[tuple[Bus, httpx.AsyncClient]]:
    """The stack with NATS running (a failed case may have left it stopped) and a worker
    registered, a bus and an API client of its own, and the stand-in reset."""
    if faulty.supervisor.pid("nats") is None:
        await faulty.supervisor.start_again("nats")
    openai_standin.reset()
    bus = await connect_bus(faulty.settings, "tests", streams="skip")
    readyz = f"http://{faulty.settings.host}:{faulty.settings.service_port('dispatcher')}/readyz"
    async with faulty.client(timeout=30) as api:

        async def dispatcher_ready() -> bool:
            # Ready: a worker registered with LiveKit (a replacement may still be starting
            # after the last case), its consumers running, NATS and PostgreSQL there.
            return (await api.get(readyz)).status_code == 200

        await eventually(dispatcher_ready, timeout=WORKER_START_SECONDS, step=0.5)
        yield bus, api
    await bus.close()


# -- POST /v1/agents with an Idempotency-Key ----------------------------------------------------


async def test_post_agents_twice_with_one_key_puts_one_agent_in_the_room(
    faulty: FaultStack, agents: tuple[Bus, httpx.AsyncClient]
) -> None:
    bus, api = agents
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
            started = await events.next(AgentSessionStarted, dispatch_id, timeout=60)
        await until(lambda: started.agent_identity in agents_in(patient), 10)
        listed = [r["id"] for r in (await api.get("/v1/agents", params={"room": room})).json()]
        in_livekit = await livekit_dispatches(faulty, room)
        Figures(
            "post-agents-twice-one-key",
            sent=2,
            acknowledged=2,
            stored=len(listed),
            applied={"agents_in_room": len(agents_in(patient)), "livekit": len(in_livekit)},
            dead_lettered=await dead_letters(bus.js),
            extra={"replayed": again.headers.get(REPLAYED, "")},
        ).report()
        assert (REPLAYED not in first.headers, again.headers[REPLAYED]) == (True, "true")
        assert again.json() == first.json()
        assert agents_in(patient) == [started.agent_identity]
        assert listed == [dispatch_id]
        assert len(in_livekit) == 1
    finally:
        if dispatch_id:
            await api.delete(f"/v1/agents/{dispatch_id}")
        await patient.leave()


async def test_a_retry_after_a_nats_timeout_whose_publish_landed_is_one_agent(
    faulty: FaultStack, agents: tuple[Bus, httpx.AsyncClient]
) -> None:
    """NATS is frozen (SIGSTOP by pid) while the dispatcher publishes: no ack comes, and after
    its retries the dispatcher answers 503. But the publish was written to NATS's socket; once
    NATS runs again it lands. The client's retry with the same key must not make a second
    dispatch: it republishes the same event id, which JetStream drops, and answers with the
    dispatch the log holds."""
    bus, api = agents
    room = new_room()
    patient = await Participant.join(api, room, "patient-2")  # its token needs NATS: before
    key = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"room": room, "role": "generic", **OPENAI}
    dispatch_id = ""

    async def requested() -> list[Envelope]:
        """The dispatch requests for the room on the log (their key, the dispatch id, derives
        from the Idempotency-Key: the test reads the tenant's and keeps the room's)."""
        every = await stored_events(bus.js, AgentDispatchRequested, faulty.tenant)
        return [e for e in every if e.data.room == room]  # type: ignore[union-attr]

    try:
        faulty.supervisor.freeze("nats")
        try:
            first = await api.post("/v1/agents", json=body, headers=key)
        finally:
            faulty.supervisor.thaw("nats")
        thawed = time.monotonic()
        assert first.status_code == 503, first.text
        assert first.json()["error"]["code"] == "bus_unavailable"
        assert first.headers["retry-after"]
        [landed] = await once_back(requested)  # the 503's publish did land
        recovery = time.monotonic() - thawed
        retry = await api.post("/v1/agents", json=body, headers=key)
        assert retry.status_code == 202, retry.text
        dispatch_id = retry.json()["id"]
        await until(lambda: len(agents_in(patient)) > 0, 60)
        on_log = await requested()
        in_livekit = await livekit_dispatches(faulty, room)
        listed = [r["id"] for r in (await api.get("/v1/agents", params={"room": room})).json()]
        Figures(
            "post-agents-retried-after-nats-timeout",
            sent=2,
            acknowledged=1,
            stored=len(on_log),
            applied={"agents_in_room": len(agents_in(patient)), "livekit": len(in_livekit)},
            dead_lettered=await dead_letters(bus.js),
            recovery_seconds=recovery,
            extra={"answers": [first.status_code, retry.status_code]},
        ).report()
        assert REPLAYED not in retry.headers  # a 5xx is not kept: it ran again
        # The answer is the dispatch the log holds: the first attempt's, not a copy.
        assert landed.data.dispatch_id == dispatch_id  # type: ignore[union-attr]
        requested_at = datetime.fromisoformat(retry.json()["requestedAt"])
        assert requested_at == landed.data.requested_at  # type: ignore[union-attr]
        assert [e.id for e in on_log] == [landed.id]
        assert listed == [dispatch_id]
        assert len(in_livekit) == 1
        assert len(agents_in(patient)) == 1
    finally:
        if dispatch_id:
            await api.delete(f"/v1/agents/{dispatch_id}")
        await patient.leave()


# -- NATS away when a session ends; a worker SIGKILLed while NATS is away -----------------------


async def test_a_session_ending_while_nats_is_away_reaches_the_log_once_it_is_back(
    faulty: FaultStack,
    agents: tuple[Bus, httpx.AsyncClient],
    openai_standin: OpenAIStandin,
) -> None:
    bus, api = agents
    patient, started = await consultation_under_way(bus, api, openai_standin, "patient-21")
    dispatch_id = started.dispatch_id

    await faulty.supervisor.kill("nats")
    killed = time.monotonic()
    await patient.leave()  # the agent ends (room_empty) with nobody to tell
    # The job gives up on NATS after a bounded wait and ends, leaving its last events on disk.
    journal = journal_of(faulty, dispatch_id)
    assert journal is not None
    await until(lambda: released(journal), timeout=30)
    left = unsent(journal)
    (ended_on_disk,) = [e for e in left if isinstance(e.data, AgentSessionEnded)]
    (final,) = [e for e in left if isinstance(e.data, AgentUsageReported) and e.data.final]
    tenant = ended_on_disk.tenant

    await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - killed)))  # the outage
    await faulty.supervisor.start_again("nats")
    back = time.monotonic()

    async def ended() -> list[Envelope]:
        return await logged(bus, AgentSessionEnded, tenant, dispatch_id)

    (ended_event,) = await once_back(ended)  # exactly one, whatever was retried
    recovery = time.monotonic() - back
    reports = await logged(bus, AgentUsageReported, tenant, dispatch_id)
    ids = [r.id for r in reports]
    await until(lambda: not journal.exists(), timeout=10)  # published, then deleted
    shown = await state_of(api, dispatch_id, "ended", timeout=20)  # not left joined
    made = max(e.data.sequence for e in left if isinstance(e.data, AgentUsageReported))
    Figures(
        "nats-away-when-a-session-ends",
        sent=made + 1,  # every usage report the session made, and session_ended
        acknowledged=len(ids) + 1,
        stored=len(set(ids)) + 1,
        applied={"dispatcher_ended": int(shown["state"] == "ended")},
        dead_lettered=await dead_letters(bus.js),
        recovery_seconds=recovery,
        extra={"on_disk_when_nats_came_back": len(left)},
    ).report()
    assert ended_event.id == ended_on_disk.id and ended_event.data.reason == "room_empty"
    assert len(ids) == len(set(ids))  # each report once (Msg-Id window, same event id)
    assert [r.id for r in reports if r.data.final] == [final.id]
    assert {e.id for e in left if isinstance(e.data, AgentUsageReported)} <= set(ids)
    assert contiguous([r.data for r in reports])  # nothing lost before the final one
    assert len(ids) == made
    assert shown["reason"] == "room_empty"


async def test_a_worker_killed_while_nats_is_away_loses_at_most_one_usage_period(
    faulty: FaultStack,
    agents: tuple[Bus, httpx.AsyncClient],
    openai_standin: OpenAIStandin,
) -> None:
    bus, api = agents
    patient, started = await consultation_under_way(bus, api, openai_standin, "patient-22")
    dispatch_id = started.dispatch_id
    worker = (await last_event(bus, AgentWorkerStarted, started.worker_id)).data

    await faulty.supervisor.kill("nats")
    killed = time.monotonic()
    # Reports go on while NATS is away: they are only on disk, in the job's journal.
    journal = journal_of(faulty, dispatch_id)
    assert journal is not None

    def reports_on_disk() -> list[AgentUsageReported]:
        return [e.data for e in unsent(journal) if isinstance(e.data, AgentUsageReported)]

    await until(lambda: len(reports_on_disk()) >= 2, timeout=15)
    killed_at = datetime.now(UTC)
    os.kill(worker.pid, signal.SIGKILL)  # the worker, and with it the job process
    await until(lambda: not alive_in_group(worker.pid), 10)
    left = reports_on_disk()
    assert left and not any(r.final for r in left)
    tenant = unsent(journal)[0].tenant

    await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - killed)))  # the outage
    await faulty.supervisor.start_again("nats")
    back = time.monotonic()
    # A replacement worker (the pool restarts it) publishes what the dead job left.
    await until(lambda: not journal.exists(), timeout=90)
    recovery = time.monotonic() - back
    await until(lambda: not journal.parent.exists(), timeout=10)  # the dead worker's folder too

    async def failed() -> list[Envelope]:
        return await logged(bus, AgentDispatchFailed, tenant, dispatch_id)

    (failure,) = await once_back(failed)
    shown = await state_of(api, dispatch_id, "failed", timeout=20)
    reports = [r.data for r in await logged(bus, AgentUsageReported, tenant, dispatch_id)]
    last = max(reports, key=lambda r: r.sequence)
    lost = (killed_at - last.period_end).total_seconds()
    made = max(r.sequence for r in left)
    Figures(
        "worker-sigkill-while-nats-away",
        sent=made,  # usage reports the job made before it was killed
        acknowledged=len(reports),
        stored=len({r.sequence for r in reports}),
        applied={"dispatcher_worker_lost": int(shown["reason"] == "worker_lost")},
        dead_lettered=await dead_letters(bus.js),
        recovery_seconds=recovery,
        extra={"on_disk": len(left), "usage_unreported": f"{lost:.1f}s"},
    ).report()
    assert failure.data.reason == "worker_lost"
    assert shown["reason"] == "worker_lost"
    assert len(reports) == made  # up to the last one made, each once
    assert contiguous(reports) and not any(r.final for r in reports)
    assert lost <= PERIOD + 1.0  # at most one period
    assert await logged(bus, AgentSessionEnded, tenant, dispatch_id) == []
    await patient.leave()
