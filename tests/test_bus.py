"""The bus against the real NATS JetStream: dedup, redelivery, dead letters, replay."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import asyncpg
import nats.js.errors
import pytest

from shared import subjects
from shared.bus import Bus
from shared.consumer import DELIVERY_HEADROOM, Consumer, ConsumerSpec, Delivery
from shared.db import projection
from shared.deadletters import list_dead_letters, matching, replay, replay_all
from shared.events import DeadLettered, Envelope, TokenIssued, envelope
from shared.failures import DependencyUnavailableError, PoisonMessageError
from tests.support import until, watch


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
async def consuming(bus: Bus, spec: ConsumerSpec[None]) -> AsyncIterator[Consumer[None]]:
    consumer = Consumer(bus, spec, None)
    task = asyncio.create_task(consumer.run())
    try:
        yield consumer
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


async def test_concurrent_publishes_each_get_their_own_ack_and_a_refusal_is_an_error(
    bus: Bus,
) -> None:
    tenant = fresh_tenant()
    published = await asyncio.gather(
        *(
            bus.publish_envelope(
                envelope(issued(f"room-{n}"), source="tests", tenant=tenant, subject=f"room-{n}")
            )
            for n in range(300)
        )
    )
    # One ack per publish (pipelined on one connection, answered out of one reply
    # subscription), each for its own message: distinct sequences, all stored.
    assert len({ack.seq for ack in published}) == 300
    info = await bus.js.stream_info(
        "MEDIAI_EVENTS", subjects_filter=subjects.type_filter(TokenIssued, tenant)
    )
    assert len(info.state.subjects or {}) == 300
    # An expectation JetStream refuses comes back to its publisher as JetStream's error.
    with pytest.raises(nats.js.errors.APIError):
        await bus.publish(
            issued("room-0"), tenant=tenant, key="room-0", expected_last_subject_sequence=1
        )


async def test_a_failing_handler_is_retried_with_backoff_then_succeeds(bus: Bus) -> None:
    tenant = fresh_tenant()
    deliveries: list[int] = []
    done = asyncio.Event()

    async def flaky(_: None, event: Envelope, delivery: Delivery) -> None:
        deliveries.append(delivery.deliveries)
        if delivery.deliveries < 3:
            raise RuntimeError("a bug, fixed by the third delivery")
        done.set()

    spec: ConsumerSpec[None] = ConsumerSpec(
        durable=f"test-retry-{tenant}",
        handlers={TokenIssued: flaky},
        tenant=tenant,
        max_deliver=5,
        backoff=(0.05,),
    )
    async with consuming(bus, spec):
        await bus.publish(issued(), tenant=tenant, key="room-1")
        await asyncio.wait_for(done.wait(), 10)
    assert deliveries == [1, 2, 3]


async def test_a_handler_that_keeps_failing_is_dead_lettered_and_can_be_replayed(bus: Bus) -> None:
    tenant = fresh_tenant()
    healthy = asyncio.Event()
    received: asyncio.Queue[str] = asyncio.Queue()

    async def broken_then_fixed(_: None, event: Envelope, delivery: Delivery) -> None:
        if not healthy.is_set():
            raise RuntimeError("bug in the handler")
        received.put_nowait(event.id)

    spec: ConsumerSpec[None] = ConsumerSpec(
        durable=f"test-dlq-{tenant}",
        handlers={TokenIssued: broken_then_fixed},
        tenant=tenant,
        max_deliver=3,
        backoff=(0.05,),
    )
    async with (
        watch(bus, DeadLettered, tenant=tenant) as dead,
        consuming(bus, spec),
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

    async def rejects(_: None, event: Envelope, delivery: Delivery) -> None:
        raise PoisonMessageError("room name is not ours")

    spec: ConsumerSpec[None] = ConsumerSpec(
        durable=f"test-poison-{tenant}", handlers={TokenIssued: rejects}, tenant=tenant
    )
    async with watch(bus, DeadLettered, tenant=tenant) as dead, consuming(bus, spec):
        await bus.publish(issued(), tenant=tenant, key="room-1")
        record = (await dead.next(timeout=10)).data
    assert isinstance(record, DeadLettered)
    assert record.deliveries == 1
    assert record.reason == "poison: room name is not ours"


async def test_the_trace_travels_in_the_headers(bus: Bus) -> None:
    from opentelemetry import trace

    tenant = fresh_tenant()
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def handler(_: None, event: Envelope, delivery: Delivery) -> None:
        seen.put_nowait(format(trace.get_current_span().get_span_context().trace_id, "032x"))

    spec: ConsumerSpec[None] = ConsumerSpec(
        durable=f"test-trace-{tenant}", handlers={TokenIssued: handler}, tenant=tenant
    )
    async with consuming(bus, spec):
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


async def test_an_event_applied_at_the_edge_neither_waits_on_nor_moves_its_consumers_position(
    pool: asyncpg.Pool,
) -> None:
    """Requests apply their own events at once (the dispatcher's POST /v1/agents, the rooms
    edges); had each also updated its consumer's one position row, concurrent requests would
    queue on that row's lock, each holding a pooled connection: 32 dispatches at once
    exhausted the dispatcher's pool and were refused 503 after the acquire timeout."""
    consumer = f"test-edge-{secrets.token_hex(4)}"
    async with projection(pool, Delivery(consumer, 5, 1), "consumed") as conn:
        assert conn is not None
    # The consumer is mid-transaction on its position (as while it applies an event)...
    async with pool.acquire() as consuming, consuming.transaction():
        await consuming.execute(
            "UPDATE consumer_positions SET stream_sequence = 6 WHERE consumer = $1", consumer
        )

        # ...and requests of the same consumer apply their events meanwhile, all at once.
        async def at_the_edge(sequence: int) -> bool:
            edge = Delivery.at_the_edge(consumer, sequence)
            async with projection(pool, edge, f"edge-{sequence}") as applying:
                return applying is not None

        async with asyncio.timeout(10):
            applied = await asyncio.gather(*(at_the_edge(s) for s in range(7, 15)))
        assert all(applied)
    # Applied at the edge, sequence 14 is ahead of events not applied yet: not the position.
    position = await pool.fetchval(
        "SELECT stream_sequence FROM consumer_positions WHERE consumer = $1", consumer
    )
    assert position == 6


@pytest.mark.parametrize("bad", [b"\xff\xfe not utf-8", b'{"not": "an event"}'])
async def test_undecodable_messages_are_dead_lettered_whole(bus: Bus, bad: bytes) -> None:
    tenant = fresh_tenant()

    async def never_called(_: None, event: Envelope, delivery: Delivery) -> None:
        raise AssertionError("an undecodable message reached the handler")

    spec: ConsumerSpec[None] = ConsumerSpec(
        durable=f"test-undecodable-{tenant}", handlers={TokenIssued: never_called}, tenant=tenant
    )
    subject = subjects.type_filter(TokenIssued, tenant).replace("*", "room-1")
    async with (
        watch(bus, DeadLettered, tenant="system") as dead,
        consuming(bus, spec),
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


async def test_an_outage_holds_the_message_without_counting_deliveries(bus: Bus) -> None:
    tenant = fresh_tenant()
    back, done = asyncio.Event(), asyncio.Event()
    deliveries: list[int] = []

    async def needs_postgres(_: None, event: Envelope, delivery: Delivery) -> None:
        deliveries.append(delivery.deliveries)
        if not back.is_set():
            raise DependencyUnavailableError("postgres", "connection refused")
        done.set()

    spec: ConsumerSpec[None] = ConsumerSpec(
        durable=f"test-outage-{tenant}",
        handlers={TokenIssued: needs_postgres},
        tenant=tenant,
        max_deliver=2,
        backoff=(0.05,),
        ack_wait=1.0,
    )
    async with (
        watch(bus, DeadLettered, tenant=tenant) as dead,
        consuming(bus, spec) as consumer,
    ):
        await bus.publish(issued(), tenant=tenant, key="room-1")
        # Retried locally for well past both its delivery limit and its ack wait (1 s).
        await until(lambda: len(deliveries) >= 10, timeout=15)
        assert consumer.health.waiting_for == "postgres"
        assert not consumer.health.ready
        back.set()
        await asyncio.wait_for(done.wait(), 10)
        await until(lambda: consumer.health.ready)
    assert set(deliveries) == {1}, "held in progress: JetStream never redelivered it"
    assert dead.drain() == []


async def test_a_replayed_dead_letter_reaches_only_the_consumer_that_gave_up(bus: Bus) -> None:
    tenant = fresh_tenant()
    seen_by_picky: list[str] = []
    seen_by_other: list[str] = []

    async def picky(_: None, event: Envelope, delivery: Delivery) -> None:
        if not seen_by_picky and event.subject == "room-1":
            seen_by_picky.append("refused")
            raise PoisonMessageError("not yet")
        seen_by_picky.append(event.subject)

    async def other(_: None, event: Envelope, delivery: Delivery) -> None:
        seen_by_other.append(event.subject)

    picky_spec: ConsumerSpec[None] = ConsumerSpec(
        durable=f"test-picky-{tenant}", handlers={TokenIssued: picky}, tenant=tenant
    )
    other_spec: ConsumerSpec[None] = ConsumerSpec(
        durable=f"test-other-{tenant}", handlers={TokenIssued: other}, tenant=tenant
    )
    async with (
        watch(bus, DeadLettered, tenant=tenant) as dead,
        consuming(bus, picky_spec),
        consuming(bus, other_spec),
    ):
        await bus.publish(issued(), tenant=tenant, key="room-1")
        letter = await dead.next(timeout=10)
        listed = await list_dead_letters(bus, limit=1000)
        await replay(bus, next(seq for seq, ev in listed if ev.id == letter.id))
        await until(lambda: "room-1" in seen_by_picky)
        # Anything after the replay reaches both, so once the other consumer has seen it, it
        # has passed the replay too (one consumer handles its messages in stream order).
        await bus.publish(issued("room-2"), tenant=tenant, key="room-2")
        await until(lambda: "room-2" in seen_by_other and "room-2" in seen_by_picky)
    assert seen_by_picky == ["refused", "room-1", "room-2"]
    assert seen_by_other == ["room-1", "room-2"]


async def test_a_message_jetstream_stops_delivering_is_dead_lettered(bus: Bus) -> None:
    """A consumer that dies on a message again and again (a crash, not an exception) makes
    JetStream give up on it; its max-deliveries advisory turns into a dead letter."""
    tenant = fresh_tenant()
    deliveries: list[int] = []

    async def crashes(_: None, event: Envelope, delivery: Delivery) -> None:
        deliveries.append(delivery.deliveries)
        raise asyncio.CancelledError  # the consumer dies mid-message: no ack, no nak

    spec: ConsumerSpec[None] = ConsumerSpec(
        durable=f"test-crash-{tenant}",
        handlers={TokenIssued: crashes},
        tenant=tenant,
        max_deliver=1,
        ack_wait=1.0,
    )
    async with watch(bus, DeadLettered, tenant=tenant) as dead:
        published = await bus.publish(issued(), tenant=tenant, key="room-1")
        while len(deliveries) < 1 + DELIVERY_HEADROOM:
            dying = asyncio.create_task(Consumer(bus, spec, None).run())
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(dying, 10)
        # That was its last delivery: a consumer running now hears JetStream give up on it.
        listener = asyncio.create_task(Consumer(bus, spec, None).run())
        try:
            letter = await dead.next(timeout=10)
        finally:
            listener.cancel()
    record = letter.data
    assert isinstance(record, DeadLettered)
    assert record.original_event_id == published.id
    assert record.reason.startswith("JetStream stopped delivering it")
    assert max(deliveries) == 1 + DELIVERY_HEADROOM
    await bus.js.delete_consumer(spec.stream, spec.durable)


async def test_dead_letters_replay_in_bulk_by_consumer_and_type(bus: Bus) -> None:
    tenant = fresh_tenant()
    healthy = asyncio.Event()
    handled: dict[str, list[str]] = {"a": [], "b": []}

    def refusing(name: str) -> Callable[[None, Envelope, Delivery], Awaitable[None]]:
        async def handle(_: None, event: Envelope, delivery: Delivery) -> None:
            if not healthy.is_set():
                raise PoisonMessageError("not yet")
            handled[name].append(event.subject)

        return handle

    specs: list[ConsumerSpec[None]] = [
        ConsumerSpec(
            durable=f"test-bulk-{n}-{tenant}", handlers={TokenIssued: refusing(n)}, tenant=tenant
        )
        for n in ("a", "b")
    ]
    async with (
        watch(bus, DeadLettered, tenant=tenant) as dead,
        consuming(bus, specs[0]),
        consuming(bus, specs[1]),
    ):
        for room in ("room-1", "room-2"):
            await bus.publish(issued(room), tenant=tenant, key=room)
        for _ in range(4):
            await dead.next(timeout=10)
        healthy.set()
        replayed = await replay_all(
            bus, matching(consumer=specs[0].durable, event_type="mediai.token.issued")
        )
        assert len(replayed) == 2
        await until(lambda: len(handled["a"]) == 2)
        assert sorted(handled["a"]) == ["room-1", "room-2"]
        mine = [
            e.data
            for _, e in await list_dead_letters(bus, limit=None)
            if isinstance(e.data, DeadLettered) and e.data.consumer in {s.durable for s in specs}
        ]
        assert [r.consumer for r in mine] == [specs[1].durable] * 2, "replayed ones leave the list"
        assert handled["b"] == []
