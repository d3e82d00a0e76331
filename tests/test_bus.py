"""The bus against the real NATS JetStream: dedup, redelivery, dead letters, replay."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import pytest

from shared import subjects
from shared.bus import Bus, Consumer, ConsumerSpec, Delivery, PoisonMessageError
from shared.db import projection
from shared.deadletters import list_dead_letters, replay
from shared.events import DeadLettered, Envelope, TokenIssued
from tests.support import watch


def issued(room: str = "room-1") -> TokenIssued:
    return TokenIssued(
        room=room,
        identity="p1",
        can_publish=True,
        can_subscribe=True,
        ttl_seconds=60,
        expires_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


def fresh_tenant() -> str:
    return "t" + secrets.token_hex(5)


@contextlib.asynccontextmanager
async def consuming(
    bus: Bus, spec: ConsumerSpec, handler: Callable[[Envelope, Delivery], Awaitable[None]]
) -> AsyncIterator[None]:
    task = asyncio.create_task(Consumer(bus, spec, handler).run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await bus.js.delete_consumer(spec.stream, spec.durable)


async def test_the_same_event_id_published_twice_is_stored_once(bus: Bus) -> None:
    tenant = fresh_tenant()
    first = await bus.publish(issued(), tenant=tenant, key="room-1", event_id="webhook-EV_1")
    await bus.publish(issued(), tenant=tenant, key="room-1", event_id="webhook-EV_1")
    info = await bus.js.stream_info(
        "MEDIAI_EVENTS", subjects_filter=subjects.type_filter(TokenIssued, tenant)
    )
    assert info.state.subjects == {
        subjects.event_subject(first.data, tenant=tenant, key="room-1"): 1
    }


async def test_a_failing_handler_is_retried_with_backoff_then_succeeds(bus: Bus) -> None:
    tenant = fresh_tenant()
    deliveries: list[int] = []
    done = asyncio.Event()

    async def flaky(event: Envelope, delivery: Delivery) -> None:
        deliveries.append(delivery.deliveries)
        if delivery.deliveries < 3:
            raise ConnectionError("database briefly away")
        done.set()

    spec = ConsumerSpec(
        durable=f"test-retry-{tenant}",
        events=(TokenIssued,),
        tenant=tenant,
        max_deliver=5,
        backoff=(0.05,),
    )
    async with consuming(bus, spec, flaky):
        await bus.publish(issued(), tenant=tenant, key="room-1")
        await asyncio.wait_for(done.wait(), 10)
    assert deliveries == [1, 2, 3]


async def test_a_handler_that_keeps_failing_is_dead_lettered_and_can_be_replayed(bus: Bus) -> None:
    tenant = fresh_tenant()
    healthy = asyncio.Event()
    received: asyncio.Queue[str] = asyncio.Queue()

    async def broken_then_fixed(event: Envelope, delivery: Delivery) -> None:
        if not healthy.is_set():
            raise RuntimeError("bug in the handler")
        received.put_nowait(event.id)

    spec = ConsumerSpec(
        durable=f"test-dlq-{tenant}",
        events=(TokenIssued,),
        tenant=tenant,
        max_deliver=3,
        backoff=(0.05,),
    )
    async with (
        watch(bus, DeadLettered, tenant=tenant) as dead,
        consuming(bus, spec, broken_then_fixed),
    ):
        published = await bus.publish(issued(), tenant=tenant, key="room-1")
        letter = await dead.next(timeout=10)
        record = letter.data
        assert isinstance(record, DeadLettered)
        assert (record.consumer, record.deliveries) == (spec.durable, 3)
        assert record.original_event_id == published.id
        assert published.id in record.original_payload
        assert record.reason.startswith("failed 3 times: RuntimeError")

        listed = await list_dead_letters(bus, limit=1000)
        sequence = next(seq for seq, ev in listed if ev.id == letter.id)
        healthy.set()
        await replay(bus, sequence)
        assert await asyncio.wait_for(received.get(), 10) == published.id


async def test_a_poison_message_is_dead_lettered_at_once(bus: Bus) -> None:
    tenant = fresh_tenant()

    async def rejects(event: Envelope, delivery: Delivery) -> None:
        raise PoisonMessageError("room name is not ours")

    spec = ConsumerSpec(durable=f"test-poison-{tenant}", events=(TokenIssued,), tenant=tenant)
    async with watch(bus, DeadLettered, tenant=tenant) as dead, consuming(bus, spec, rejects):
        await bus.publish(issued(), tenant=tenant, key="room-1")
        record = (await dead.next(timeout=10)).data
    assert isinstance(record, DeadLettered)
    assert record.deliveries == 1
    assert record.reason == "poison: room name is not ours"


async def test_the_trace_travels_in_the_headers(bus: Bus) -> None:
    from opentelemetry import trace

    tenant = fresh_tenant()
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def handler(event: Envelope, delivery: Delivery) -> None:
        seen.put_nowait(format(trace.get_current_span().get_span_context().trace_id, "032x"))

    spec = ConsumerSpec(durable=f"test-trace-{tenant}", events=(TokenIssued,), tenant=tenant)
    async with consuming(bus, spec, handler):
        with trace.get_tracer("test").start_as_current_span("request") as span:
            published = await bus.publish(issued(), tenant=tenant, key="room-1")
            trace_id = format(span.get_span_context().trace_id, "032x")
        assert published.traceparent is not None and trace_id in published.traceparent
        assert await asyncio.wait_for(seen.get(), 10) == trace_id


async def test_a_projection_applies_each_event_once(pool: asyncpg.Pool) -> None:
    consumer = f"test-projection-{secrets.token_hex(4)}"
    applied = 0
    for sequence in (7, 7, 8):  # a redelivery of seq 7, then a duplicate publish at seq 8
        async with projection(pool, Delivery(consumer, sequence, 1), "event-1") as conn:
            if conn is not None:
                applied += 1
    assert applied == 1
    position = await pool.fetchval(
        "SELECT stream_sequence FROM consumer_positions WHERE consumer = $1", consumer
    )
    assert position == 8


@pytest.mark.parametrize("bad", [b"\xff\xfe not utf-8", b'{"not": "an event"}'])
async def test_undecodable_messages_are_dead_lettered_whole(bus: Bus, bad: bytes) -> None:
    tenant = fresh_tenant()

    async def never_called(event: Envelope, delivery: Delivery) -> None:
        raise AssertionError("an undecodable message reached the handler")

    spec = ConsumerSpec(durable=f"test-undecodable-{tenant}", events=(TokenIssued,), tenant=tenant)
    subject = subjects.type_filter(TokenIssued, tenant).replace("*", "room-1")
    async with (
        watch(bus, DeadLettered, tenant="system") as dead,
        consuming(bus, spec, never_called),
    ):
        await bus.js.publish(subject, bad)
        letter = await dead.wait_for(
            lambda e: isinstance(e.data, DeadLettered) and e.data.consumer == spec.durable
        )
    record = letter.data
    assert isinstance(record, DeadLettered)
    assert record.reason.startswith("undecodable")
    restored = (
        __import__("base64").b64decode(record.original_payload)
        if record.payload_encoding == "base64"
        else record.original_payload.encode()
    )
    assert restored == bad
