"""The event bus: streams declared in code, one publish function, durable consumers.

Publishing sets ``Nats-Msg-Id`` to the event id (JetStream drops duplicates inside the
stream's window) and carries the trace context in the ``traceparent`` header. Consumers are
durable pull consumers with explicit ack, bounded redelivery with backoff, and a dead-letter
path: a message a handler cannot take is published whole as a ``DeadLettered`` event on the
dead-letter stream, logged, and can be replayed (see ``shared.deadletters``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    PubAck,
)
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from shared import attributes as attr
from shared import subjects
from shared.config import Settings
from shared.events import (
    CODEC,
    DeadLettered,
    Envelope,
    Event,
    EventDecodeError,
    envelope,
)
from shared.streams import create_missing_streams, stream_configs
from shared.telemetry import current_traceparent, extract, inject, tracer

log = logging.getLogger(__name__)
_tracer = tracer(__name__)


class BusUnavailableError(Exception):
    """JetStream did not acknowledge a publish after the retries (NATS down or unreachable)."""


class PoisonMessageError(Exception):
    """Raised by a handler for a message that can never succeed: dead-letter it at once."""


@dataclass
class Bus:
    """A NATS connection with JetStream, publishing as one service (``mediai/<service>``)."""

    nc: NatsClient
    js: JetStreamContext
    source: str
    publish_timeout: float = 2.0
    publish_attempts: int = 3

    async def publish(
        self,
        data: Event,
        *,
        tenant: str,
        key: str,
        event_id: str | None = None,
        time: datetime | None = None,
        expected_last_subject_sequence: int | None = None,
    ) -> Envelope:
        """Publish one event and wait for JetStream's ack; returns the envelope published.

        ``key`` is the aggregate the event is about (a room name, a dispatch id); it becomes the
        CloudEvents ``subject``. Pass ``event_id`` when the event has a natural dedup key (a
        LiveKit webhook id): a second publish of the same id is dropped by JetStream.
        """
        event = envelope(
            data,
            source=self.source,
            tenant=tenant,
            subject=key,
            event_id=event_id,
            time=time,
            traceparent=current_traceparent(),
        )
        await self.publish_envelope(
            event, expected_last_subject_sequence=expected_last_subject_sequence
        )
        return event

    async def publish_envelope(
        self, event: Envelope, *, expected_last_subject_sequence: int | None = None
    ) -> PubAck:
        subject = subjects.event_subject(event.data, tenant=event.tenant, key=event.subject)
        headers = {"Nats-Msg-Id": event.id}
        inject(headers)
        if expected_last_subject_sequence is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(expected_last_subject_sequence)
        payload = CODEC.encode(event)
        with _tracer.start_as_current_span(
            f"publish {event.type}",
            kind=SpanKind.PRODUCER,
            attributes={
                attr.MESSAGING_SYSTEM: "nats",
                attr.MESSAGING_OPERATION: "send",
                attr.MESSAGING_MESSAGE_ID: event.id,
                attr.EVENT_TYPE: event.type,
                attr.TENANT: event.tenant,
            },
        ):
            return await self._publish_with_retry(subject, payload, headers)

    async def _publish_with_retry(
        self, subject: str, payload: bytes, headers: dict[str, str]
    ) -> PubAck:
        # Retrying with the same Nats-Msg-Id is safe: if the first attempt did land, JetStream
        # recognises the id and the retry changes nothing.
        for attempt in range(1, self.publish_attempts + 1):
            try:
                return await self.js.publish(
                    subject, payload, timeout=self.publish_timeout, headers=headers
                )
            except (
                nats.errors.TimeoutError,
                nats.errors.ConnectionClosedError,
                nats.errors.ConnectionReconnectingError,
                nats.errors.OutboundBufferLimitError,
                nats.errors.NoRespondersError,
                nats.js.errors.NoStreamResponseError,
            ) as error:
                log.warning(
                    "publish attempt %d/%d failed: %s",
                    attempt,
                    self.publish_attempts,
                    type(error).__name__,
                )
                if attempt < self.publish_attempts:
                    await asyncio.sleep(0.1 * attempt)
        raise BusUnavailableError(f"JetStream did not acknowledge a publish to {subject}")

    async def close(self) -> None:
        if self.nc.is_closed:
            return
        try:
            await self.nc.drain()
        except (nats.errors.Error, TimeoutError):
            await self.nc.close()


async def connect_bus(settings: Settings, service: str, *, declare: bool = True) -> Bus:
    """Connect to NATS as ``service`` and create the streams that are missing (shared.streams)."""
    nc = await nats.connect(
        servers=settings.nats_url.split(","),
        name=f"mediai-{service}",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=2,
        drain_timeout=5,
    )
    js = nc.jetstream()
    if declare:
        await create_missing_streams(js, stream_configs(settings))
    return Bus(nc=nc, js=js, source=f"mediai/{service}")


@dataclass(frozen=True)
class Delivery:
    """Where a consumed event came from, for positions and idempotency records."""

    consumer: str
    stream_sequence: int
    deliveries: int


Handler = Callable[[Envelope, Delivery], Awaitable[None]]


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable consumer of some event types; filter subjects derive from the types."""

    durable: str
    events: Sequence[type[Event]]
    max_deliver: int = 5
    # Delay before each redelivery after a failure, in seconds (the last one repeats).
    backoff: Sequence[float] = field(default=(0.5, 2.0, 10.0, 30.0))
    ack_wait: float = 30.0
    tenant: str | None = None

    @property
    def stream(self) -> str:
        streams = {event.STREAM for event in self.events}
        if len(streams) != 1:
            raise ValueError(f"consumer {self.durable} mixes streams {sorted(streams)}")
        return subjects.stream_name(streams.pop())

    def config(self) -> ConsumerConfig:
        return ConsumerConfig(
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            # Every version of each type: during a rolling upgrade old producers still publish
            # the previous version, which the codec upcasts (a version newer than this code
            # knows is undecodable and dead-lettered, to replay once this consumer is upgraded).
            filter_subjects=[subjects.any_version_filter(e, self.tenant) for e in self.events],
        )


class Consumer:
    """Runs one durable consumer: fetch, decode, handle, then ack, nak-with-delay or dead-letter."""

    def __init__(self, bus: Bus, spec: ConsumerSpec, handler: Handler, batch: int = 1) -> None:
        # batch=1 by default: nats-py's fetch of N holds a lone message until the pull expires
        # (up to 1 s) while it waits for N; a throughput-bound consumer may pass more.
        self.bus, self.spec, self.handler, self.batch = bus, spec, handler, batch

    async def run(self) -> None:
        """Consume until cancelled."""
        await self.bus.js.add_consumer(self.spec.stream, self.spec.config())
        subscription = await self.bus.js.pull_subscribe_bind(
            durable=self.spec.durable, stream=self.spec.stream
        )
        try:
            await self._consume(subscription)
        finally:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()

    async def _consume(self, subscription: JetStreamContext.PullSubscription) -> None:
        while True:
            try:
                messages = await subscription.fetch(self.batch, timeout=1.0)
            except TimeoutError:
                # nats-py raises its own TimeoutError, or a plain asyncio one when the wait ran
                # out after its first probe (under load); either is "no message yet", and not
                # catching both let the consumer task die unseen.
                # nats-py's fetch turns a cancellation into a timeout: honour the cancellation.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from None
                continue
            except (nats.errors.ConnectionClosedError, nats.errors.ConnectionReconnectingError):
                await asyncio.sleep(0.5)
                continue
            for message in messages:
                try:
                    await self.process(message)
                except (nats.errors.Error, BusUnavailableError) as error:
                    # Could not ack, nak or dead-letter (NATS away): the message stays
                    # unacknowledged and JetStream redelivers it after ack_wait.
                    log.warning(
                        "consumer %s: could not settle a message: %s",
                        self.spec.durable,
                        type(error).__name__,
                    )

    async def process(self, message: Msg) -> None:
        metadata = message.metadata
        delivery = Delivery(
            consumer=self.spec.durable,
            stream_sequence=metadata.sequence.stream,
            deliveries=metadata.num_delivered,
        )
        try:
            event = CODEC.decode(message.data)
        except EventDecodeError as error:
            await self._dead_letter(message, delivery, None, f"undecodable: {error}")
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
            try:
                await self.handler(event, delivery)
            except PoisonMessageError as error:
                span.set_status(trace.StatusCode.ERROR, "poison message")
                await self._dead_letter(message, delivery, event, f"poison: {error}")
                return
            except Exception as error:  # noqa: BLE001 - any handler failure is retried, then dead-lettered
                span.set_status(trace.StatusCode.ERROR, type(error).__name__)
                if delivery.deliveries >= self.spec.max_deliver:
                    reason = f"failed {delivery.deliveries} times: {type(error).__name__}: {error}"
                    await self._dead_letter(message, delivery, event, reason)
                else:
                    log.warning(
                        "consumer %s: %s (seq %d) failed on delivery %d: %s; will retry",
                        self.spec.durable,
                        event.type,
                        delivery.stream_sequence,
                        delivery.deliveries,
                        type(error).__name__,
                    )
                    backoff = self.spec.backoff
                    await message.nak(delay=backoff[min(delivery.deliveries, len(backoff)) - 1])
                return
        await message.ack()

    async def _dead_letter(
        self, message: Msg, delivery: Delivery, event: Envelope | None, reason: str
    ) -> None:
        try:
            payload, encoding = message.data.decode(), "utf-8"
        except UnicodeDecodeError:
            import base64

            payload, encoding = base64.b64encode(message.data).decode(), "base64"
        record = DeadLettered(
            consumer=self.spec.durable,
            stream=self.spec.stream,
            stream_sequence=delivery.stream_sequence,
            original_subject=message.subject,
            original_type=event.type if event else None,
            original_event_id=event.id if event else None,
            original_headers=dict(message.headers or {}),
            original_payload=payload,
            payload_encoding=encoding,
            deliveries=delivery.deliveries,
            reason=reason,
        )
        # Publish the dead letter before terminating: if this publish fails, the message stays
        # unacknowledged and comes back, so nothing is lost.
        await self.bus.publish(
            record, tenant=event.tenant if event else "system", key=self.spec.durable
        )
        await message.term()
        log.error(
            "consumer %s dead-lettered stream seq %d (%s) after %d deliveries: %s",
            self.spec.durable,
            delivery.stream_sequence,
            event.type if event else "undecodable",
            delivery.deliveries,
            reason.split(":", 1)[0],
        )
