"""The webhooks service against the real stack: signature checks, dedup, order, NATS outages.

Webhooks here are made and signed by the test exactly as LiveKit does (the local LiveKit server
sends its own real ones in tests/test_rooms.py), so every case LiveKit can produce, including
the rare ones (duplicates, reordering, drops), can be produced on demand.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import asyncpg
import httpx
import msgspec
import nats
import pytest
from google.protobuf.json_format import MessageToJson
from litestar.testing import AsyncTestClient
from livekit.protocol import models
from livekit.protocol.webhook import WebhookEvent
from nats.js import JetStreamContext

from deploy.stack import StackState, nats_part
from deploy.supervisor import Supervisor
from services.webhooks.app import create_app
from services.webhooks.signing import sign
from shared import subjects
from shared.bus import Bus
from shared.config import Settings
from shared.db import apply_migrations, discover_migrations
from shared.events import Envelope, Event
from shared.events.rooms import (
    LiveKitWebhookReceived,
    ParticipantJoined,
    RoomStarted,
    WebhooksDropped,
)
from shared.tenants import authenticate
from tests.support import EventStream, eventually, free_port, watch

PATH = "/v1/webhooks/livekit"
T = TypeVar("T")


# --- helpers shared with tests/test_rooms.py --------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


async def tenant_of(pool: asyncpg.Pool, key: str) -> str:
    tenant = await authenticate(pool, key)
    assert tenant is not None
    return tenant.id


def webhook(event: str, **fields: object) -> WebhookEvent:
    """A webhook as LiveKit makes it: a fresh id, stamped now."""
    return WebhookEvent(event=event, id=unique("EV"), created_at=int(time.time()), **fields)  # type: ignore[arg-type]


def body_of(hook: WebhookEvent) -> bytes:
    return MessageToJson(hook).encode()


async def deliver(
    client: httpx.AsyncClient,
    hook: WebhookEvent,
    stack: StackState | Settings,
    **sign_options: object,
) -> httpx.Response:
    """POST a webhook signed with the stack's key, as LiveKit does."""
    body = body_of(hook)
    token = sign(body, stack.livekit_api_key, stack.livekit_api_secret, **sign_options)  # type: ignore[arg-type]
    return await client.post(
        PATH,
        content=body,
        headers={"Authorization": token, "Content-Type": "application/webhook+json"},
    )


class Seen:
    """Every event a watch delivered, searchable in any order (events of different services
    do not arrive in the order they were caused: the outbox relays a moment later)."""

    def __init__(self, stream: EventStream) -> None:
        self.stream = stream
        self.events: list[Envelope] = []

    async def find(self, predicate: Callable[[Envelope], bool], timeout: float = 15.0) -> Envelope:
        for event in self.events:
            if predicate(event):
                return event
        async with asyncio.timeout(timeout):
            while True:
                event = await self.stream.queue.get()
                self.events.append(event)
                if predicate(event):
                    return event


async def count_events(bus_js: JetStreamContext, event: type[Event], tenant: str) -> int:
    info = await bus_js.stream_info(
        subjects.stream_name(event.STREAM), subjects_filter=subjects.type_filter(event, tenant)
    )
    return sum((info.state.subjects or {}).values())


@pytest.fixture
async def livekit_hooks(stack: StackState) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the gateway with no API key: LiveKit's side."""
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=15) as client:
        yield client


# --- tests ------------------------------------------------------------------------------------


async def test_bad_signatures_get_401_and_publish_nothing(
    stack: StackState,
    bus: Bus,
    pool: asyncpg.Pool,
    tenant_key: str,
    livekit_hooks: httpx.AsyncClient,
) -> None:
    tenant = await tenant_of(pool, tenant_key)
    room = unique("sig")
    hook = webhook("room_started", room=models.Room(sid=unique("RM"), name=f"{tenant}~{room}"))
    body = body_of(hook)
    key, secret = stack.livekit_api_key, stack.livekit_api_secret
    altered = body.replace(b"room_started", b"room_finished")
    cases = {
        "missing": (body, None),
        "not a jwt": (body, "nonsense"),
        "forged": (body, sign(body, key, "a-forger-guessed-this-secret-0123456789")),
        "another key": (body, sign(body, "someone-else", secret)),
        "expired": (body, sign(body, key, secret, ttl=timedelta(minutes=-10))),
        "body altered": (altered, sign(body, key, secret)),
    }
    async with watch(bus, RoomStarted, tenant=tenant) as events:
        for case, (content, token) in cases.items():
            headers = {"Authorization": token} if token else {}
            answer = await livekit_hooks.post(PATH, content=content, headers=headers)
            assert answer.status_code == 401, case
            assert answer.json()["error"]["code"] in ("invalid_signature", "unauthorized"), case
        # A valid webhook after them is the first event to arrive: none of the others was.
        sentinel = webhook(
            "room_started", room=models.Room(sid=unique("RM"), name=f"{tenant}~{unique('ok')}")
        )
        assert (await deliver(livekit_hooks, sentinel, stack)).status_code == 200
        first = await events.next()
        assert first.id == sentinel.id
    assert await count_events(bus.js, RoomStarted, tenant) >= 1


async def test_the_same_webhook_ten_times_is_one_event(
    stack: StackState,
    bus: Bus,
    pool: asyncpg.Pool,
    tenant_key: str,
    livekit_hooks: httpx.AsyncClient,
) -> None:
    tenant = await tenant_of(pool, tenant_key)
    room = unique("dup")
    hook = webhook(
        "participant_joined",
        room=models.Room(sid=unique("RM"), name=f"{tenant}~{room}"),
        participant=models.ParticipantInfo(sid=unique("PA"), identity="patient-1"),
    )
    async with watch(bus, ParticipantJoined, tenant=tenant) as events:
        answers = await asyncio.gather(*(deliver(livekit_hooks, hook, stack) for _ in range(10)))
        assert {a.status_code for a in answers} == {200}
        assert {a.json()["webhookId"] for a in answers} == {hook.id}
        sentinel = webhook(
            "participant_joined",
            room=models.Room(sid=unique("RM"), name=f"{tenant}~{unique('s')}"),
            participant=models.ParticipantInfo(sid=unique("PA"), identity="p2"),
        )
        await deliver(livekit_hooks, sentinel, stack)
        await events.wait_for(lambda e: e.id == sentinel.id)
        seen = [hook.id] + [e.id for e in events.drain()]
    assert seen.count(hook.id) == 1
    info = await bus.js.stream_info(
        "MEDIAI_EVENTS", subjects_filter=subjects.type_filter(ParticipantJoined, tenant)
    )
    subject = next(s for s in info.state.subjects if s.endswith(f".{subjects.token(room)}"))
    assert info.state.subjects[subject] == 1


async def test_events_carry_tenant_room_and_livekits_time(
    stack: StackState,
    bus: Bus,
    pool: asyncpg.Pool,
    tenant_key: str,
    livekit_hooks: httpx.AsyncClient,
) -> None:
    tenant = await tenant_of(pool, tenant_key)
    room = unique("meta")
    agent = models.ParticipantInfo(
        sid=unique("PA"), identity="agent-intake", kind=models.ParticipantInfo.Kind.AGENT
    )
    hook = webhook(
        "participant_joined",
        room=models.Room(sid=unique("RM"), name=f"{tenant}~{room}"),
        participant=agent,
    )
    async with watch(bus, ParticipantJoined, tenant=tenant) as events:
        await deliver(livekit_hooks, hook, stack)
        event = await events.wait_for(lambda e: e.id == hook.id)
    assert (event.tenant, event.subject, event.source) == (tenant, room, "mediai/webhooks")
    assert int(event.time.timestamp()) == hook.created_at
    assert isinstance(event.data, ParticipantJoined)
    assert (event.data.room, event.data.kind, event.data.identity) == (
        room,
        "agent",
        "agent-intake",
    )


async def test_foreign_rooms_unknown_types_and_drops_are_kept(
    stack: StackState,
    bus: Bus,
    livekit_hooks: httpx.AsyncClient,
) -> None:
    foreign = unique("not-ours")
    async with watch(
        bus,
        RoomStarted,
        LiveKitWebhookReceived,
        WebhooksDropped,
        tenant="system",
    ) as events:
        started = webhook(
            "room_started", room=models.Room(sid=unique("RM"), name=foreign), num_dropped=4
        )
        strange = webhook(
            "room_something_new",
            room=models.Room(sid=unique("RM"), name=foreign, turn_password="s3cret"),
        )
        assert (await deliver(livekit_hooks, started, stack)).json()["events"] == 2
        assert (await deliver(livekit_hooks, strange, stack)).status_code == 200
        got = {
            type(e.data): e for e in [await events.next(), await events.next(), await events.next()]
        }
    assert got[RoomStarted].data.room == foreign
    dropped = got[WebhooksDropped].data
    assert isinstance(dropped, WebhooksDropped)
    assert (dropped.num_dropped, dropped.webhook_id) == (4, started.id)
    kept = got[LiveKitWebhookReceived].data
    assert isinstance(kept, LiveKitWebhookReceived)
    assert kept.webhook_event == "room_something_new"
    assert b"s3cret" not in msgspec.json.encode(kept.payload)


async def test_webhooks_out_of_order_end_in_the_right_state(
    stack: StackState,
    bus: Bus,
    pool: asyncpg.Pool,
    tenant_key: str,
    api: httpx.AsyncClient,
    livekit_hooks: httpx.AsyncClient,
) -> None:
    tenant = await tenant_of(pool, tenant_key)
    room, gone = unique("order"), unique("gone")
    lk_room = models.Room(sid=unique("RM"), name=f"{tenant}~{room}", creation_time=int(time.time()))
    lk_gone = models.Room(sid=unique("RM"), name=f"{tenant}~{gone}")
    patient = models.ParticipantInfo(
        sid=unique("PA"), identity="patient-1", name="Ana", joined_at=int(time.time())
    )
    doctor = models.ParticipantInfo(sid=unique("PA"), identity="doctor-1")
    for hook in [
        webhook("room_started", room=lk_room),
        webhook("participant_left", room=lk_room, participant=patient),  # before its join
        webhook("participant_joined", room=lk_room, participant=patient),
        webhook("room_finished", room=lk_gone),  # before its start
        webhook("room_started", room=lk_gone),
        webhook("participant_joined", room=lk_room, participant=doctor),  # last: a marker
    ]:
        assert (await deliver(livekit_hooks, hook, stack)).status_code == 200

    async def doctor_present() -> list[str] | None:
        answer = await api.get(f"/v1/rooms/{room}/participants")
        identities = [p["identity"] for p in answer.json().get("participants", [])]
        return identities if "doctor-1" in identities else None

    # Events are projected in order: once the marker shows, everything before it is applied.
    assert await eventually(doctor_present) == ["doctor-1"]
    row = await pool.fetchrow("SELECT * FROM room_participants WHERE sid = $1", patient.sid)
    assert row["left_at"] is not None
    assert row["joined_at"] is not None
    # The name is kept sealed, as the event carried it (shared.phi).
    assert row["name"].startswith("enc:v1:")
    assert await bus.phi.open_text(row["name"], tenant=tenant, path="name") == "Ana"
    assert (await api.get(f"/v1/rooms/{gone}")).status_code == 404


# --- NATS outage: a private NATS (and database), so the session's stack is left alone ---------


@pytest.fixture
async def private_settings(
    settings: Settings, stack: StackState, tmp_path: Path
) -> AsyncIterator[Settings]:
    """Settings with their own NATS and their own database on the stack's Postgres: the app's
    outbox relay must not take the shared database's events to a private NATS."""
    port = free_port()
    database = f"webhooks_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(settings.database_url)
    try:
        await admin.execute(f"CREATE DATABASE {database}")
    finally:
        await admin.close()
    url = settings.database_url.rsplit("/", 1)[0] + f"/{database}"
    conn = await asyncpg.connect(url)
    try:
        await apply_migrations(conn, discover_migrations())
    finally:
        await conn.close()
    yield msgspec.structs.replace(
        settings,
        data_dir=tmp_path,
        nats_port=port,
        nats_url=f"nats://{settings.host}:{port}",
        database_url=url,
    )
    admin = await asyncpg.connect(settings.database_url)
    try:
        await admin.execute(f"DROP DATABASE {database} WITH (FORCE)")
    finally:
        await admin.close()


async def test_nats_down_means_503_and_the_retry_is_published_once(
    private_settings: Settings,
) -> None:
    settings = private_settings
    supervisor = Supervisor(settings.host, settings.data_dir / "logs")
    await supervisor.start(nats_part(settings))
    try:
        async with AsyncTestClient(app=create_app(settings)) as client:
            tenant = "t" + secrets.token_hex(5)
            room = unique("outage")
            hook = webhook(
                "room_started", room=models.Room(sid=unique("RM"), name=f"{tenant}~{room}")
            )
            assert (
                await deliver(
                    client,
                    webhook(
                        "room_started", room=models.Room(sid=unique("RM"), name=f"{tenant}~warm-up")
                    ),
                    settings,
                )
            ).status_code == 200

            await supervisor.stop()
            answer = await deliver(client, hook, settings)
            assert answer.status_code == 503
            assert answer.json()["error"]["code"] == "bus_unavailable"

            await supervisor.start(nats_part(settings))  # same port, same data folder

            async def retried() -> bool:  # as LiveKit does: again until a 2xx
                return (await deliver(client, hook, settings)).status_code == 200

            await eventually(retried, timeout=30)
            await deliver(client, hook, settings)  # and a duplicate, for good measure
        nc = await nats.connect(settings.nats_url)
        try:
            assert await count_events(nc.jetstream(), RoomStarted, tenant) == 2  # warm-up + one
        finally:
            await nc.close()
    finally:
        await supervisor.stop()
