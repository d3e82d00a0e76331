"""Durable consumers: a map from event type to handler, and one loop that runs it safely.

A consumer is declared as data — ``ConsumerSpec(durable=…, handlers={RoomStarted: on_started})``
— and its JetStream subscription is derived from the map, so no event type is received that
nobody handles. What a failure means decides what happens to the message:

- a dependency is away (PostgreSQL, NATS, LiveKit; see ``shared.failures``): the consumer holds
  the message (in-progress acknowledgements, so its delivery count does not grow), stops fetching
  and retries it locally with capped backoff for as long as the outage lasts, while its task's
  health (and so ``/readyz``) names the dependency;
- the message can never succeed (undecodable, no handler, ``PoisonMessageError``): it is
  dead-lettered at once;
- anything else (a bug): redelivered with backoff, then dead-lettered.

A dead letter is published, and acknowledged by JetStream, before the original is terminated; if
that publish fails the message stays pending and comes back. Messages JetStream itself stopped
delivering (its max-deliveries advisory) are dead-lettered too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from shared import attributes as attr
from shared import metrics, subjects
from shared.background import TaskHealth
from shared.bus import Bus
from shared.crashpoints import crash_point
from shared.events import CODEC, DeadLettered, Envelope, Event, EventDecodeError
from shared.failures import PoisonMessageError, unavailable_dependency
from shared.phi import KeysUnavailableError, patient_of
from shared.telemetry import extract, tracer

log = logging.getLogger(__name__)
_tracer = tracer(__name__)

C = TypeVar("C")
E = TypeVar("E", bound=Event)

# A replayed dead letter names the consumer it is for; the others acknowledge it untouched.
REPLAY_FOR_HEADER = "Mediai-Replay-For"
# JetStream may deliver a message this many times more than the consumer's own limit, so a dead
# letter that could not be published on the last delivery is tried again on the next.
DELIVERY_HEADROOM = 5
# Holding a message through an outage: the first retry, and the longest wait between retries.
HOLD_FIRST_SECONDS = 0.2
HOLD_MAX_SECONDS = 5.0
# How often a consumer reads its lag (pending messages) from JetStream, for its metric.
LAG_EVERY_SECONDS = 15.0
_DEAD_LETTER_IDS = uuid.UUID("3b0c7d0e-0f4e-4f54-9d7c-2a1e6f0b5c21")


@dataclass(frozen=True)
class Delivery:
    """Where a consumed event came from, for positions and idempotency records. An event
    applied at the edge (by the request that made it, before its consumer gets to it) has
    ``deliveries`` 0: ``at_the_edge``."""

    consumer: str
    stream_sequence: int
    deliveries: int

    @classmethod
    def at_the_edge(cls, consumer: str, stream_sequence: int = 0) -> Delivery:
        return cls(consumer=consumer, stream_sequence=stream_sequence, deliveries=0)


Handler = Callable[[C, Envelope, Delivery], Awaitable[None]]


def data_of(event: Envelope, kind: type[E]) -> E:
    """The event's data as the type its handler was registered for."""
    if not isinstance(event.data, kind):
        raise PoisonMessageError(f"expected {kind.TYPE}, got {event.type}")
    return event.data


@dataclass(frozen=True)
class ConsumerSpec(Generic[C]):
    """A durable consumer: its name and the handler of each event type it takes.

    Handlers are ``async def handler(context, event, delivery)``; the context (a pool, a service
    object) is given when the consumer runs. ``max_deliver`` and ``backoff`` bound the retries of
    unclassified failures (None: the bus's defaults, from settings)."""

    durable: str
    handlers: Mapping[type[Event], Handler[C]]
    max_deliver: int | None = None
    # Delay before each redelivery after a failure, in seconds (the last one repeats).
    backoff: Sequence[float] | None = None
    ack_wait: float = 30.0
    tenant: str | None = None
    # 1 by default: nats-py's fetch of N holds a lone message up to a second while it waits for
    # N; a throughput-bound consumer (billing's projection) may take more.
    batch: int = 1
    # True: handlers get the event with its personal fields opened (shared.phi; the key service
    # being away is an outage like PostgreSQL's). False: they get them sealed, and the consumer
    # never asks for a key (billing).
    opens: bool = False

    @property
    def events(self) -> tuple[type[Event], ...]:
        return tuple(self.handlers)

    @property
    def stream(self) -> str:
        streams = {event.STREAM for event in self.handlers}
        if len(streams) != 1:
            raise ValueError(f"consumer {self.durable} mixes streams {sorted(streams)}")
        return subjects.stream_name(streams.pop())

    def config(self, max_deliver: int) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_deliver=max_deliver + DELIVERY_HEADROOM,
            # Every version of each type: during a rolling upgrade old producers still publish
            # the previous version, which the codec upcasts (a version newer than this code
            # knows is undecodable and dead-lettered, to replay once this consumer is upgraded).
            filter_subjects=[subjects.any_version_filter(e, self.tenant) for e in self.handlers],
        )


class Consumer(Generic[C]):
    """Runs one durable consumer until cancelled: fetch, decode, handle, then settle."""

    def __init__(self, bus: Bus, spec: ConsumerSpec[C], context: C) -> None:
        self.bus, self.spec, self.context = bus, spec, context
        self.max_deliver = spec.max_deliver or bus.retry.max_deliver
        self.backoff = tuple(spec.backoff or bus.retry.backoff)
        self.health = TaskHealth.current()
        self._in_hand: list[Msg] = []

    async def run(self) -> None:
        spec = self.spec
        await self.bus.js.add_consumer(spec.stream, spec.config(self.max_deliver))
        subscription = await self.bus.js.pull_subscribe_bind(
            durable=spec.durable, stream=spec.stream
        )
        advisories = await self.bus.nc.subscribe(
            subjects.max_deliveries_advisory(spec.stream, spec.durable), cb=self._on_advisory
        )
        self.health.running()
        try:
            await self._consume(subscription)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await advisories.unsubscribe()
                await subscription.unsubscribe()

    async def _consume(self, subscription: JetStreamContext.PullSubscription) -> None:
        lag_checked = 0.0
        while True:
            if time.monotonic() - lag_checked > LAG_EVERY_SECONDS:
                lag_checked = time.monotonic()
                await self._measure_lag()
            try:
                messages = await subscription.fetch(self.spec.batch, timeout=1.0)
            except TimeoutError:
                # nats-py raises its own TimeoutError, or a plain asyncio one when the wait ran
                # out after its first probe (under load); either is "no message yet".
                # nats-py's fetch turns a cancellation into a timeout: honour the cancellation.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from None
                if self.health.waiting_for == "nats" and self.bus.nc.is_connected:
                    self.health.running()
                continue
            except (
                nats.errors.ConnectionClosedError,
                nats.errors.ConnectionReconnectingError,
            ) as e:
                self.health.waiting("nats", e)
                await asyncio.sleep(0.5)
                continue
            self._in_hand = list(messages)
            for message in messages:
                try:
                    await self.process(message)
                except (nats.errors.Error, OSError, KeysUnavailableError) as error:
                    # Could not ack, nak or dead-letter (NATS or the key service away): the
                    # message stays unacknowledged and JetStream redelivers it after ack_wait.
                    log.warning(
                        "consumer %s: could not settle a message: %s",
                        self.spec.durable,
                        type(error).__name__,
                    )
                self._in_hand.remove(message)

    async def _measure_lag(self) -> None:
        try:
            info = await self.bus.js.consumer_info(self.spec.stream, self.spec.durable)
        except (nats.errors.Error, OSError):
            return  # NATS away: the fetch below says so
        metrics.PENDING.labels(self.spec.durable).set(info.num_pending + info.num_ack_pending)

    async def process(self, message: Msg) -> None:
        """Handle one message and settle it (ack, nak with delay, or dead-letter)."""
        metadata = message.metadata
        delivery = Delivery(
            consumer=self.spec.durable,
            stream_sequence=metadata.sequence.stream,
            deliveries=metadata.num_delivered,
        )
        name = self.spec.durable
        if delivery.deliveries > 1:
            metrics.REDELIVERED.labels(name).inc()
        replay_for = (message.headers or {}).get(REPLAY_FOR_HEADER)
        if replay_for is not None and replay_for != name:
            await message.ack()  # a dead letter replayed for another consumer
            metrics.CONSUMED.labels(name, "", "skipped").inc()
            return
        try:
            event = CODEC.decode(message.data)
        except EventDecodeError as error:
            await self._dead_letter(message, delivery, None, f"undecodable: {error}")
            return
        handler = self.spec.handlers.get(type(event.data))
        if handler is None:
            await self._dead_letter(message, delivery, event, f"no handler for {event.type}")
            return
        with _tracer.start_as_current_span(
            f"process {event.type}",
            context=extract(message.headers),
            kind=SpanKind.CONSUMER,
            attributes={
                attr.MESSAGING_SYSTEM: "nats",
                attr.MESSAGING_OPERATION: "process",
                attr.MESSAGING_CONSUMER_GROUP: self.spec.durable,
                attr.MESSAGING_MESSAGE_ID: event.id,
                attr.EVENT_TYPE: event.type,
                attr.TENANT: event.tenant,
                attr.STREAM_SEQUENCE: delivery.stream_sequence,
                attr.DELIVERIES: delivery.deliveries,
            },
        ) as span:
            started = time.monotonic()
            try:
                await self._handle_through_outages(handler, event, delivery)
            except PoisonMessageError as error:
                span.set_status(trace.StatusCode.ERROR, "poison message")
                await self._dead_letter(message, delivery, event, f"poison: {error}")
                return
            except Exception as error:  # noqa: BLE001 - a bug: bounded retries, then dead letter
                span.set_status(trace.StatusCode.ERROR, type(error).__name__)
                await self._retry_later(message, delivery, event, error)
                return
            finally:
                metrics.HANDLE_SECONDS.labels(name).observe(time.monotonic() - started)
        # A crash here leaves the handler's work committed and the message unacknowledged:
        # JetStream redelivers it, and the handler's inbox must make the second time a no-op.
        crash_point("consumer.after_commit_before_ack")
        await message.ack()
        metrics.CONSUMED.labels(name, event.type, "ok").inc()

    async def _handle_through_outages(
        self, handler: Handler[C], event: Envelope, delivery: Delivery
    ) -> None:
        """Run the handler; while it fails because a dependency is away, hold the messages in
        hand (in progress) and try again, for as long as the outage lasts."""
        delay = HOLD_FIRST_SECONDS
        progress_every = self.spec.ack_wait / 3
        last_progress = time.monotonic()
        while True:
            try:
                await handler(self.context, await self._readable(event), delivery)
            except Exception as error:
                dependency = unavailable_dependency(error)
                if dependency is None:
                    raise
                self.health.waiting(dependency, error)
                metrics.WAITING.labels(self.spec.durable).set(1)
                if time.monotonic() - last_progress >= progress_every:
                    await self._keep_in_progress()
                    last_progress = time.monotonic()
                await asyncio.sleep(min(delay, progress_every))
                delay = min(delay * 2, HOLD_MAX_SECONDS)
                continue
            if not self.health.ready:
                self.health.running()
                metrics.WAITING.labels(self.spec.durable).set(0)
            return

    async def _readable(self, event: Envelope) -> Envelope:
        return await self.bus.phi.open(event) if self.spec.opens else event

    async def _keep_in_progress(self) -> None:
        for held in self._in_hand:
            with contextlib.suppress(nats.errors.Error, OSError):
                await held.in_progress()  # NATS away too: it redelivers later, nothing lost

    async def _retry_later(
        self, message: Msg, delivery: Delivery, event: Envelope, error: Exception
    ) -> None:
        if delivery.deliveries >= self.max_deliver:
            reason = f"failed {delivery.deliveries} times: {type(error).__name__}: {error}"
            await self._dead_letter(message, delivery, event, reason)
            return
        log.warning(
            "consumer %s: %s (seq %d) failed on delivery %d: %s; will retry",
            self.spec.durable,
            event.type,
            delivery.stream_sequence,
            delivery.deliveries,
            type(error).__name__,
        )
        await message.nak(delay=self.backoff[min(delivery.deliveries, len(self.backoff)) - 1])
        metrics.CONSUMED.labels(self.spec.durable, event.type, "retried").inc()

    async def _dead_letter(
        self, message: Msg, delivery: Delivery, event: Envelope | None, reason: str
    ) -> None:
        await publish_dead_letter(
            self.bus,
            consumer=self.spec.durable,
            stream=self.spec.stream,
            subject=message.subject,
            payload=message.data,
            headers=dict(message.headers or {}),
            stream_sequence=delivery.stream_sequence,
            deliveries=delivery.deliveries,
            reason=reason,
            event=event,
        )
        # Only now, with the dead letter acknowledged by JetStream: a failure above leaves the
        # message pending, and it comes back.
        await message.term()
        metrics.CONSUMED.labels(
            self.spec.durable, event.type if event else "", "dead_lettered"
        ).inc()

    async def _on_advisory(self, advisory: Msg) -> None:
        """JetStream stopped delivering a message (its delivery limit): dead-letter it too."""
        try:
            notice = json.loads(advisory.data)
            sequence, deliveries = int(notice["stream_seq"]), int(notice["deliveries"])
            original = await self.bus.js.get_msg(self.spec.stream, sequence)
        except (ValueError, KeyError, nats.errors.Error) as error:
            log.error(
                "consumer %s: a max-deliveries advisory could not be read: %s",
                self.spec.durable,
                type(error).__name__,
            )
            return
        data = original.data or b""
        try:
            event: Envelope | None = CODEC.decode(data)
        except EventDecodeError:
            event = None
        try:
            await publish_dead_letter(
                self.bus,
                consumer=self.spec.durable,
                stream=self.spec.stream,
                subject=original.subject or "",
                payload=data,
                headers=dict(original.headers or {}),
                stream_sequence=sequence,
                deliveries=deliveries,
                reason=f"JetStream stopped delivering it after {deliveries} deliveries",
                event=event,
            )
        except Exception as error:  # noqa: BLE001 - a callback: nothing above us would see it
            log.error(
                "consumer %s: stream seq %d reached its delivery limit and could not be "
                "dead-lettered (%s); it is still in the stream",
                self.spec.durable,
                sequence,
                type(error).__name__,
            )


async def publish_dead_letter(
    bus: Bus,
    *,
    consumer: str,
    stream: str,
    subject: str,
    payload: bytes,
    headers: dict[str, str],
    stream_sequence: int,
    deliveries: int,
    reason: str,
    event: Envelope | None,
) -> None:
    """Publish a message a consumer gave up on, whole, to the dead-letter stream, and log it.
    It is sealed with the original event's patient's personal key (the tenant's for an event
    about no patient, or an undecodable message), so erasing the patient erases it too.

    Its id is fixed by the consumer and the stream sequence, so publishing it twice (a retry
    after a lost acknowledgement, two replicas) keeps one dead letter."""
    try:
        text, encoding = payload.decode(), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(payload).decode(), "base64"
    record = DeadLettered(
        consumer=consumer,
        stream=stream,
        stream_sequence=stream_sequence,
        original_subject=subject,
        original_type=event.type if event else None,
        original_event_id=event.id if event else None,
        original_headers=headers,
        original_payload=text,
        payload_encoding=encoding,
        deliveries=deliveries,
        reason=reason,
        patient_ref=patient_of(event.data) if event else "",
    )
    await bus.publish(
        record,
        tenant=event.tenant if event else "system",
        key=consumer,
        event_id=str(uuid.uuid5(_DEAD_LETTER_IDS, f"{consumer}:{stream}:{stream_sequence}")),
    )
    metrics.DEAD_LETTERS.labels(consumer).inc()
    log.error(
        "consumer %s dead-lettered stream seq %d (%s) after %d deliveries: %s",
        consumer,
        stream_sequence,
        event.type if event else "undecodable",
        deliveries,
        reason.split(":", 1)[0],
    )
