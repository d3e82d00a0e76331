"""Services die at a crash point (shared/crashpoints.py) and are started again: each time,
exactly one effect. The dispatcher: one LiveKit dispatch, one dispatch on the log and in the read
model. A consumer killed after its commit, before its ack: one usage row in billing, one
anamnesis record in scheduling. The outbox relay killed after a publish, before marking the row:
one event of the action on the stream."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from services.billing.consumers import USAGE_PROJECTION
from services.scheduling.anamnesis import ANAMNESIS_CONSUMER
from shared.bus import Bus, connect_bus
from shared.crashpoints import VARIABLE
from shared.events import envelope
from shared.events.agents import AgentDispatched, AgentDispatchRequested, AgentUsageReported
from shared.events.clinical import AnamnesisRecorded
from shared.events.rooms import RoomCreated
from tests.faults.crashes import (
    alone,
    arm,
    died_at,
    dispatch_state,
    livekit_dispatches,
    open_room,
    running,
    settled,
    start_unarmed,
)
from tests.faults.support import (
    FaultStack,
    Figures,
    dead_letters,
    fault_stack,
    inbox_count,
    stored_events,
    unique,
)
from tests.support import eventually
from tests.test_scheduling_anamnesis import record

pytestmark = pytest.mark.livekit

OPENAI = {
    "stt": "openai/gpt-4o-mini-transcribe",
    "llm": "openai/gpt-4o-mini",
    "tts": "openai/gpt-4o-mini-tts",
}
CONSUMER_POINT = "consumer.after_commit_before_ack"
OUTBOX_POINT = "outbox.after_publish_before_mark"


@pytest.fixture(scope="module")
async def faulty() -> AsyncIterator[FaultStack]:
    # No agent workers: the effects counted are the dispatcher's own. A deadline long enough
    # for JetStream to redeliver what the dead process held (its ack wait, 30 s). No
    # reconciler: its corrections would be outbox rows of their own. The first point of each
    # service armed from the start (none of them meets a message before its case sends one);
    # rooms' relay would meet the stack's own first outbox rows: it is armed in its case.
    async with fault_stack(
        ["dispatcher", "rooms", "billing", "scheduling"],
        environment={
            "dispatcher": {VARIABLE: "dispatcher.after_create_dispatch"},
            "billing": {VARIABLE: CONSUMER_POINT},
            "scheduling": {VARIABLE: CONSUMER_POINT},
        },
        agent_pool_min=0,
        agent_pool_max=0,
        agent_dispatch_deadline=90,
        rooms_reconcile_interval=0,
    ) as running:
        yield running


@pytest.fixture
async def bus(faulty: FaultStack) -> AsyncIterator[Bus]:
    """A connection publishing as the agent does."""
    connected = await connect_bus(faulty.settings, "agent", streams="skip")
    yield connected
    await connected.close()


@pytest.fixture
async def pool(faulty: FaultStack) -> AsyncIterator[asyncpg.Pool]:
    created = await asyncpg.create_pool(faulty.settings.database_url, min_size=1, max_size=2)
    assert created is not None
    yield created
    await created.close()


async def test_crash_after_livekit_dispatch_before_dispatched_is_one_livekit_dispatch(
    faulty: FaultStack,
) -> None:
    room = await open_room(faulty)
    await running(faulty, "keys", "dispatcher")
    await arm(faulty, "dispatcher", "dispatcher.after_create_dispatch")
    async with faulty.client() as http:
        try:
            answer = await http.post("/v1/agents", json={"room": room, **OPENAI})
            status = answer.status_code
        except httpx.TransportError:
            status = 0
        # The launcher may reach the crash point before the HTTP edge has answered: then the
        # process dies under the request too (the gateway says 503).
        assert status in (202, 503), status
        await died_at(faulty, "dispatcher", "dispatcher.after_create_dispatch")
        assert len(await livekit_dispatches(faulty, room)) == 1  # LiveKit took it, then the crash
        restarted = time.monotonic()
        await start_unarmed(faulty, "dispatcher")

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
    await running(faulty, "keys", "dispatcher")
    await arm(faulty, "dispatcher", "dispatcher.after_publish_before_apply")
    async with faulty.client() as http:
        try:
            answer = await http.post(
                "/v1/agents", json={"room": room, **OPENAI}, headers={"Idempotency-Key": key}
            )
            status, retry_after = answer.status_code, answer.headers.get("retry-after")
        except httpx.TransportError:
            status, retry_after = 0, None
        assert status in (0, 502, 503)  # the process died before it could answer
        if status == 503:  # the gateway's own answer, with when to try again
            assert retry_after == "5", answer.headers
        await died_at(faulty, "dispatcher", "dispatcher.after_publish_before_apply")
        restarted = time.monotonic()
        await start_unarmed(faulty, "dispatcher")

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


async def test_billing_killed_after_commit_before_ack_counts_the_usage_once(
    faulty: FaultStack, bus: Bus, pool: asyncpg.Pool
) -> None:
    await running(faulty, "keys", "billing")
    await settled(bus.js, USAGE_PROJECTION, 0)  # nothing of an earlier case in hand
    await arm(faulty, "billing", CONSUMER_POINT)
    start = datetime(2001, 6, 1, 12, 0, tzinfo=UTC)  # a day of its own, for the audit
    day = start.date().isoformat()
    dispatch_id = unique("dispatch")
    usage = AgentUsageReported(
        dispatch_id=dispatch_id,
        room="consulta-crash",
        role="intake",
        period_start=start,
        period_end=start + timedelta(seconds=30),
        llm_model="gpt-4o-mini",
        llm_prompt_tokens=1234,
        sequence=1,
        provider="openai",
    )
    event = envelope(usage, source="mediai/agent", tenant=faulty.tenant, subject=dispatch_id)
    ack = await bus.publish_envelope(event)  # as the agent publishes it
    await died_at(faulty, "billing", CONSUMER_POINT)

    async def usage_rows() -> list[tuple[str, int]]:
        rows = await pool.fetch(
            "SELECT meter, quantity FROM billing.usage WHERE tenant = $1 AND dispatch = $2",
            faulty.tenant,
            dispatch_id,
        )
        return [(r["meter"], r["quantity"]) for r in rows]

    at_crash = await usage_rows()  # committed by the process that died
    delivered = await bus.js.consumer_info(USAGE_PROJECTION.stream, USAGE_PROJECTION.durable)
    restarted = time.monotonic()
    await start_unarmed(faulty, "billing")
    # JetStream delivers the unacknowledged message again (after the ack wait): the inbox
    # makes it a no-op, then it is acknowledged.
    await settled(bus.js, USAGE_PROJECTION, ack.seq)
    recovery = time.monotonic() - restarted
    after = await bus.js.consumer_info(USAGE_PROJECTION.stream, USAGE_PROJECTION.durable)
    async with faulty.client() as http:
        shown = await http.get("/v1/usage", params={"from": day, "to": day, "group_by": "meter"})
        audit = await http.post("/v1/audits", json={"from": day, "to": day})
    billed = {r["meter"]: r["quantity"] for r in shown.json()["rows"]}
    redelivered = after.delivered.consumer_seq - delivered.delivered.consumer_seq
    Figures(
        "crash-consumer-after-commit-billing",
        sent=1,
        acknowledged=1,
        stored=1,
        applied={"billing": await inbox_count(pool, USAGE_PROJECTION.durable, [event.id])},
        dead_lettered=await dead_letters(bus.js),
        recovery_seconds=recovery,
        extra={"redelivered": redelivered, "usage_rows": len(await usage_rows())},
    ).report()
    assert at_crash == [("llm_prompt_tokens", 1234)]  # committed before the crash
    assert redelivered >= 1  # it did come back...
    assert await usage_rows() == at_crash  # ...and changed nothing: one row, one quantity
    assert billed == {"llm_prompt_tokens": 1234}
    assert audit.status_code == 201, audit.text
    assert audit.json()["matches"] is True


async def test_scheduling_killed_after_commit_before_ack_stores_one_anamnesis(
    faulty: FaultStack, bus: Bus, pool: asyncpg.Pool
) -> None:
    await running(faulty, "keys", "scheduling")
    await settled(bus.js, ANAMNESIS_CONSUMER, 0)
    await arm(faulty, "scheduling", CONSUMER_POINT)
    data: AnamnesisRecorded = record(unique("consulta").replace("_", "-"))
    event = envelope(data, source="mediai/agent", tenant=faulty.tenant, subject=data.dispatch_id)
    ack = await bus.publish_envelope(event)  # on the PHI stream, as the intake agent does
    await died_at(faulty, "scheduling", CONSUMER_POINT)

    async def records() -> int:
        count = await pool.fetchval(
            "SELECT count(*) FROM anamnesis_records WHERE tenant_id = $1 AND dispatch_id = $2",
            faulty.tenant,
            data.dispatch_id,
        )
        return int(count)

    at_crash = await records()
    delivered = await bus.js.consumer_info(ANAMNESIS_CONSUMER.stream, ANAMNESIS_CONSUMER.durable)
    restarted = time.monotonic()
    await start_unarmed(faulty, "scheduling")
    await settled(bus.js, ANAMNESIS_CONSUMER, ack.seq)
    recovery = time.monotonic() - restarted
    after = await bus.js.consumer_info(ANAMNESIS_CONSUMER.stream, ANAMNESIS_CONSUMER.durable)
    async with faulty.client() as http:
        shown = await http.get(f"/v1/consultations/{data.dispatch_id}/anamnesis")
    redelivered = after.delivered.consumer_seq - delivered.delivered.consumer_seq
    stored = await records()
    Figures(
        "crash-consumer-after-commit-anamnesis",
        sent=1,
        acknowledged=1,
        stored=stored,
        applied={"scheduling": await inbox_count(pool, ANAMNESIS_CONSUMER.durable, [event.id])},
        dead_lettered=await dead_letters(bus.js),
        recovery_seconds=recovery,
        extra={"redelivered": redelivered},
    ).report()
    assert at_crash == 1  # committed before the crash
    assert redelivered >= 1
    assert stored == 1
    assert shown.status_code == 200, shown.text
    assert shown.json()["summaryPtBr"] == data.summary_pt_br


async def test_outbox_relay_killed_after_publish_before_mark_is_one_event(
    faulty: FaultStack, bus: Bus, pool: asyncpg.Pool
) -> None:
    # The rooms relay alone, so it is the one that publishes the action's row.
    await alone(faulty, "rooms")

    async def unpublished() -> int:
        return int(await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))

    async def all_published() -> bool:
        return await unpublished() == 0

    await eventually(all_published, timeout=30)
    await arm(faulty, "rooms", OUTBOX_POINT)
    room = unique("consulta").replace("_", "-")
    async with faulty.client() as http:
        try:
            status = (await http.post("/v1/rooms", json={"name": room})).status_code
        except httpx.TransportError:
            status = 0
        # The relay runs every second: it may publish the row, and die, before the answer.
        assert status in (0, 201, 502, 503), status
        await died_at(faulty, "rooms", OUTBOX_POINT)
        assert await unpublished() == 1  # on the stream (below) but not marked
        restarted = time.monotonic()
        await start_unarmed(faulty, "rooms")
        await eventually(all_published, timeout=30)  # republished and marked
        recovery = time.monotonic() - restarted
        shown = await http.get(f"/v1/rooms/{room}")
    created = [
        e
        for e in await stored_events(bus.js, RoomCreated, faulty.tenant)
        if e.data.room == room  # type: ignore[union-attr]
    ]
    Figures(
        "crash-outbox-after-publish",
        sent=1,
        acknowledged=int(status == 201),
        stored=len(created),
        applied={"rooms": int(shown.status_code == 200)},
        dead_lettered=await dead_letters(bus.js),
        recovery_seconds=recovery,
        extra={"answer": status},
    ).report()
    assert len(created) == 1, "the relay's second publish of the row reached the stream"
    assert shown.status_code == 200, shown.text
