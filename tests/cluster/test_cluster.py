"""The cluster topology (``mediai up --cluster``: 3 NATS nodes with R3 streams, 2 LiveKit nodes
on one Redis, 2 replicas of every service behind the gateway, 2 agent worker pools) running the
paths that matter: token -> join, webhook -> event once, dispatch -> agent answers,
usage -> invoice, audit matches; each shown to happen once although two replicas could do it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from livekit import rtc

from deploy.cluster import TOPOLOGY, node_name
from deploy.stack import replica_count
from services import http_services
from services.rooms.projection import READ_MODEL as ROOMS_READ_MODEL
from shared import subjects
from shared.bus import Bus, connect_bus
from shared.db import create_pool
from shared.events import EVENTS_STREAM
from shared.events.agents import (
    AgentDispatched,
    AgentDispatchRequested,
    AgentSessionEnded,
    AgentSessionStarted,
    AgentStateChanged,
)
from shared.events.billing import AuditCompleted, InvoiceIssued
from shared.events.rooms import ParticipantJoined
from shared.naming import livekit_room
from tests import billing_script as script
from tests.billing_support import caught_up, client, mediai, new_tenant, publish
from tests.faults.support import (
    FIGURES,
    FaultStack,
    Sent,
    dead_letters,
    deliver,
    fault_stack,
    inbox_count,
    now_seconds,
    participant_hook,
    send_all,
    stored_events,
    unique,
)
from tests.standin import OpenAIStandin
from tests.support import eventually, until, watch
from tests.test_agent_e2e import (
    HEARD,
    OPENAI,
    Participant,
    following,
    registered_workers,
    speech,
)

pytestmark = pytest.mark.livekit

ROOMS = 6
WEBHOOKS = 300


def figure(case: str, **values: object) -> None:
    """One line of figures, printed and gathered for the end of the run (docs/scaling.md)."""
    line = f"CLUSTER {case}: " + " ".join(f"{k}={v}" for k, v in values.items())
    FIGURES.append(line)
    print(line)


@pytest.fixture(scope="module")
async def cluster(openai_standin: OpenAIStandin) -> AsyncIterator[FaultStack]:
    started = time.monotonic()
    async with fault_stack(
        http_services(),
        **dict[str, object](TOPOLOGY),
        openai_base_url=openai_standin.base_url,
        openai_api_key="standin-key",
        agent_usage_period=2,
    ) as running:
        figure("start", seconds=round(time.monotonic() - started, 1))
        yield running


@pytest.fixture(scope="module")
async def bus(cluster: FaultStack) -> AsyncIterator[Bus]:
    connected = await connect_bus(cluster.settings, "tests", streams="skip")
    yield connected
    await connected.close()


def redis(cluster: FaultStack, *command: str) -> list[str]:
    settings = cluster.settings
    result = subprocess.run(
        ["redis-cli", "-h", settings.host, "-p", str(settings.redis_port), "--raw", *command],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return result.stdout.splitlines()


async def test_every_node_runs_and_status_shows_each(cluster: FaultStack, bus: Bus) -> None:
    # Two of every service, but one recorder (it holds each recording in memory).
    replicated = {
        node_name(s, r, replica_count(cluster.settings, s))
        for s in http_services()
        for r in range(1, replica_count(cluster.settings, s) + 1)
    }
    assert "recorder" in replicated and "token-2" in replicated and "pool-2" in replicated
    servers = {"nats-1", "nats-2", "nats-3", "redis", "postgres", "gateway"}
    livekit = {"livekit-1", "livekit-2", "livekit-lb"}
    assert {p.name for p in cluster.supervisor.parts} == servers | livekit | replicated
    status = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "deploy", "status", "--json"],
        env={**os.environ, "MEDIAI_DATA_DIR": str(cluster.settings.data_dir)},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    parts = {p["name"]: p for p in json.loads(status.stdout)["parts"]}
    assert set(parts) == servers | livekit | replicated
    assert {p["state"] for p in parts.values()} == {"running"}
    assert len({p["url"] for p in parts.values()}) == len(parts)  # ports per node
    # R3 streams, every replica current.
    info = await bus.js.stream_info(subjects.stream_name(EVENTS_STREAM))
    assert info.config.num_replicas == 3
    assert info.cluster is not None and len(info.cluster.replicas or []) == 2
    # Both LiveKit nodes registered in the Redis they share.
    assert len(redis(cluster, "HKEYS", "nodes")) == 2


async def test_tokens_join_rooms_across_nodes_and_each_webhook_is_one_event(
    cluster: FaultStack, bus: Bus
) -> None:
    rooms = [f"cluster-{uuid.uuid4().hex[:8]}" for _ in range(ROOMS)]
    people: list[rtc.Room] = []
    async with cluster.client() as http:
        try:
            for room in rooms:
                grant = await http.post(
                    "/v1/tokens", json={"room": room, "identity": "patient-1", "role": "patient"}
                )
                assert grant.status_code == 201, grant.text
                person = rtc.Room()
                await person.connect(grant.json()["wsUrl"], grant.json()["token"])
                people.append(person)

            async def everyone_seen() -> bool:
                for room in rooms:
                    shown = await http.get(f"/v1/rooms/{room}/participants")
                    if shown.status_code != 200 or not shown.json()["participants"]:
                        return False
                return True

            await eventually(everyone_seen, timeout=60)
            joined = await stored_events(bus.js, ParticipantJoined, cluster.tenant)
            per_room = Counter(e.subject for e in joined if e.subject in rooms)
            assert per_room == dict.fromkeys(rooms, 1)
            placed = dict(zip(*[iter(redis(cluster, "HGETALL", "room_node_map"))] * 2, strict=True))
            nodes = Counter(placed[livekit_room(cluster.tenant, room)] for room in rooms)
        finally:
            for person in people:
                await person.disconnect()

        # LiveKit retries a webhook it got no answer for: the same one, to either replica.
        at = now_seconds()
        hook = participant_hook(
            "participant_joined", cluster.tenant, unique("room"), unique("PA"), at=at, joined_at=at
        )
        sent = Sent()
        for _ in range(6):
            assert await deliver(http, hook, cluster.settings, sent)
    joined = await stored_events(bus.js, ParticipantJoined, cluster.tenant)
    assert [e.id for e in joined].count(joined[-1].id) == 1
    assert sum(1 for e in joined if e.subject == hook.room.name.split("~")[1]) == 1
    figure(
        "rooms",
        rooms=len(rooms),
        joined_events=sum(per_room.values()),
        rooms_per_livekit_node="/".join(map(str, sorted(nodes.values()))),
        same_webhook_sent=6,
        its_events=1,
    )


async def test_a_dispatch_sent_to_both_dispatchers_is_one_agent_that_answers(
    cluster: FaultStack, bus: Bus, openai_standin: OpenAIStandin
) -> None:
    await registered_workers(bus)
    openai_standin.reset()
    openai_standin.transcript_default(HEARD)
    openai_standin.chat(
        "dor de cabeça",
        text="Entendi, dor de cabeça desde segunda-feira. A dor é forte?",
        usage={"prompt_tokens": 50, "completion_tokens": 9},
    )
    room = f"cluster-{uuid.uuid4().hex[:8]}"
    body = {
        "room": room,
        "role": "generic",
        "instructions": "Você atende a Clínica Teste.",
        **OPENAI,
    }
    async with (
        cluster.client(timeout=30) as http,
        following(bus, AgentSessionStarted, AgentStateChanged, AgentSessionEnded) as events,
    ):
        patient = await Participant.join(http, room, "patient-1")
        try:
            # The same request twice at once (a client's retry), one to each dispatcher replica
            # (round robin): one runs, the other is told it is running; then once more, after
            # it, which answers what the first did. One dispatch, one agent.
            key = str(uuid.uuid4())
            headers = {"Idempotency-Key": key}
            both = await asyncio.gather(
                *(http.post("/v1/agents", json=body, headers=headers) for _ in "ab")
            )
            codes = sorted(a.status_code for a in both)
            assert codes in ([202, 202], [202, 409]), [a.text for a in both]
            dispatch_id = next(a for a in both if a.status_code == 202).json()["id"]
            for _ in "ab":
                again = await http.post("/v1/agents", json=body, headers=headers)
                assert (again.status_code, again.json()["id"]) == (202, dispatch_id), again.text
            started = await events.next(AgentSessionStarted, dispatch_id, timeout=90)
            await events.next(AgentStateChanged, dispatch_id, timeout=30)  # ready: listening
            spoke = await patient.say(*speech())
            heard = await patient.wait_for_voice(spoke, started.agent_identity, timeout=60)
            agents = [
                p
                for p in patient.room.remote_participants.values()
                if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
            ]
            assert [a.identity for a in agents] == [started.agent_identity]
            assert (await http.delete(f"/v1/agents/{dispatch_id}")).status_code == 202
            await events.next(AgentSessionEnded, dispatch_id, timeout=60)
        finally:
            await patient.leave()
    for kind in (AgentDispatchRequested, AgentDispatched, AgentSessionStarted):
        logged = await stored_events(bus.js, kind, cluster.tenant)
        ids = [getattr(e.data, "dispatch_id", "") for e in logged]
        assert ids.count(dispatch_id) == 1, kind.TYPE
    figure("dispatch", end_of_speech_to_agent_voice_s=round(heard - spoke, 2), agents_in_room=1)


async def test_usage_to_invoice_and_audit_once_with_two_billing_replicas(
    cluster: FaultStack, bus: Bus
) -> None:
    pool = await create_pool(cluster.settings, max_size=2)
    try:
        tenant, key = await new_tenant(pool)
    finally:
        await pool.close()
    await publish(bus, script.envelopes(tenant))
    await caught_up(bus)
    invoice_id = f"inv-{tenant}-2001-03"
    async with client(cluster.state, key) as http:
        draft = (await http.get(f"/v1/invoices/{invoice_id}")).json()
        assert draft["totalCents"] == script.TOTAL_CENTS  # two projections, counted once
        async with watch(bus, InvoiceIssued, tenant=tenant) as announced:
            issue = ("billing", "invoices", "issue", "--month", "2001-03", "--tenant", tenant)
            results = await asyncio.gather(*(mediai(cluster.settings, *issue) for _ in range(2)))
            await announced.next()
        assert sorted(out.split()[0] for _, out, _ in results) == ["already", "issued"]
        assert announced.drain() == []
        async with watch(bus, AuditCompleted, tenant=tenant) as audited:
            report = await http.post("/v1/audits", json={"from": "2001-03-01", "to": "2001-03-31"})
            assert report.status_code == 201, report.text
            await audited.next()
        assert report.json()["matches"] is True
        assert report.json()["invoicedCents"] == script.TOTAL_CENTS
    issued = await stored_events(bus.js, InvoiceIssued, tenant)
    assert len(issued) == 1


async def test_one_replica_of_each_service_one_pool_and_one_livekit_node_killed_under_traffic(
    cluster: FaultStack, bus: Bus, openai_standin: OpenAIStandin
) -> None:
    """SIGKILL replica 1 of every service while tokens and webhooks flow through the gateway;
    then pool 1 (its workers die with it) and a dispatch is answered by pool 2; then a LiveKit
    node, and new rooms go to the other. The NATS stream leader killed mid-burst on this same
    3-node cluster is tests/faults/test_nats_cluster.py."""
    settings = cluster.settings
    at = now_seconds()
    hooks = [
        participant_hook(
            "participant_joined", cluster.tenant, unique("load"), unique("PA"), at=at, joined_at=at
        )
        for _ in range(WEBHOOKS)
    ]
    sent, tokens = Sent(), []  # tokens: (monotonic, status)
    done = asyncio.Event()

    async def ask_tokens(http: httpx.AsyncClient) -> None:
        n = 0
        while not done.is_set():
            n += 1
            try:
                answer = await http.post(
                    "/v1/tokens", json={"room": f"load-{n % 20}", "identity": f"p-{n}"}
                )
                tokens.append((time.monotonic(), answer.status_code))
            except httpx.TransportError:
                tokens.append((time.monotonic(), 0))
            await asyncio.sleep(0.05)

    async with cluster.client(timeout=30) as http:
        asking = asyncio.create_task(ask_tokens(http))
        sending = asyncio.create_task(send_all(http, hooks, settings, sent, concurrency=4, rate=20))
        await until(lambda: len(sent.acknowledged) >= WEBHOOKS // 4, 60)
        killed_at = time.monotonic()
        victims = [
            f"{s}-1" for s in http_services() if s != "pool" and replica_count(settings, s) > 1
        ]
        await asyncio.gather(*(cluster.supervisor.kill(name) for name in victims))
        await sending
        done.set()
        await asking

    failed = [t - killed_at for t, status in tokens if status != 201]
    assert len(sent.acknowledged) == WEBHOOKS  # LiveKit's retries got every one through
    stored = await stored_events(bus.js, ParticipantJoined, cluster.tenant)
    load_rooms = {h.room.name.split("~")[1] for h in hooks}
    per_room = Counter(e.subject for e in stored if e.subject in load_rooms)
    assert per_room == dict.fromkeys(load_rooms, 1)  # each once, none lost
    pool = await create_pool(settings, max_size=2)
    try:
        applied = await eventually(
            lambda: _applied_all(pool, [e.id for e in stored if e.subject in load_rooms]), 60
        )
    finally:
        await pool.close()
    assert await dead_letters(bus.js) == 0
    # Requests caught in a killed replica fail (the gateway does not resend a request a service
    # may have acted on); from then on the other replica answers everything.
    assert all(seconds < 5 for seconds in failed), failed
    figure(
        "replicas killed",
        services=len(victims),
        webhooks_sent=WEBHOOKS,
        acknowledged=len(sent.acknowledged),
        stored=sum(per_room.values()),
        applied=applied,
        webhook_retries=sum(sent.statuses.values()) - WEBHOOKS,
        token_requests=len(tokens),
        token_failed=len(failed),
        last_failure_after_kill_s=round(max(failed, default=0.0), 2),
        lost=0,
    )

    # One worker pool killed: its workers die with it (PR_SET_PDEATHSIG); pool 2 answers.
    killed_at = time.monotonic()
    await cluster.supervisor.kill("pool-1")
    openai_standin.reset()
    openai_standin.transcript_default(HEARD)
    openai_standin.chat("dor de cabeça", text="Entendi. A dor é forte?")
    room = f"cluster-{uuid.uuid4().hex[:8]}"
    body = {
        "room": room,
        "role": "generic",
        "instructions": "Você atende a Clínica Teste.",
        **OPENAI,
    }
    async with (
        cluster.client(timeout=30) as http,
        following(bus, AgentSessionStarted, AgentStateChanged) as events,
    ):
        patient = await Participant.join(http, room, "patient-1")
        try:
            created = await http.post("/v1/agents", json=body)
            assert created.status_code == 202, created.text
            dispatch_id = created.json()["id"]
            started = await events.next(AgentSessionStarted, dispatch_id, timeout=90)
            await events.next(AgentStateChanged, dispatch_id, timeout=30)
            spoke = await patient.say(*speech())
            await patient.wait_for_voice(spoke, started.agent_identity, timeout=60)
            answered_after = time.monotonic() - killed_at
        finally:
            await patient.leave()
    figure("pool killed", dispatch_answered_after_kill_s=round(answered_after, 1))

    # One LiveKit node killed: the balancer drops it, and new rooms go to the other node.
    nodes_before = set(redis(cluster, "HKEYS", "nodes"))
    killed_at = time.monotonic()
    await cluster.supervisor.kill("livekit-2")
    room = f"cluster-{uuid.uuid4().hex[:8]}"
    async with cluster.client() as http:
        grant = await http.post("/v1/tokens", json={"room": room, "identity": "patient-1"})
        person = rtc.Room()
        await asyncio.wait_for(person.connect(grant.json()["wsUrl"], grant.json()["token"]), 30)
        try:
            joined_after = time.monotonic() - killed_at

            async def seen() -> bool:
                shown = await http.get(f"/v1/rooms/{room}/participants")
                return shown.status_code == 200 and bool(shown.json()["participants"])

            await eventually(seen, timeout=30)
        finally:
            await person.disconnect()
    placed = dict(zip(*[iter(redis(cluster, "HGETALL", "room_node_map"))] * 2, strict=True))
    assert placed[livekit_room(cluster.tenant, room)] in nodes_before
    figure("livekit node killed", new_room_joined_after_kill_s=round(joined_after, 1))


async def _applied_all(pool: asyncpg.Pool, ids: list[str]) -> int:
    """How many of ``ids`` the rooms read model applied, once all are (else 0)."""
    count = await inbox_count(pool, ROOMS_READ_MODEL.durable, ids)
    return count if count == len(ids) else 0
