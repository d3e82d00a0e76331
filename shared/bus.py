"""The event bus: streams declared in code, the connection, and one publish function.

Publishing seals the event's personal and clinical fields (``shared.phi``), sets
``Nats-Msg-Id`` to the event id (JetStream drops duplicates inside the stream's window) and
carries the trace context in the ``traceparent`` header. Consumers are in ``shared.consumer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import PubAck
from opentelemetry.trace import SpanKind

from shared import attributes as attr
from shared import subjects
from shared.config import Settings
from shared.events import (
    CODEC,
    Envelope,
    Event,
    envelope,
)
from shared.keys import KeyCache
from shared.phi import Phi
from shared.streams import create_missing_streams, stream_configs
from shared.telemetry import current_traceparent, inject, tracer

log = logging.getLogger(__name__)
_tracer = tracer(__name__)


class BusUnavailableError(Exception):
    """JetStream did not acknowledge a publish after the retries (NATS down or unreachable)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How consumers retry a message whose handler failed for an unclassified reason: this many
    deliveries, with these delays between them (the last repeats), then the dead letter."""

    max_deliver: int = 5
    backoff: tuple[float, ...] = (0.5, 2.0, 10.0, 30.0)


@dataclass
class Bus:
    """A NATS connection with JetStream, publishing as one service (``mediai/<service>``)."""

    nc: NatsClient
    js: JetStreamContext
    source: str
    # Seals what is published and opens what a consumer asks to read (an agent job swaps in
    # its dispatch's keys).
    phi: Phi
    retry: RetryPolicy = field(default_factory=RetryPolicy)
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
        event = await self.phi.seal(event)
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
            # Reconnecting (NATS away): no drain; closing may then meet the dead socket's error.
            with contextlib.suppress(OSError):
                await self.nc.close()


@dataclass
class _OutageLog:
    """One line when NATS goes away and one when it is back, instead of nats-py's traceback
    every reconnect attempt (every half second of an outage, in every process)."""

    service: str
    down: bool = False
    nc: NatsClient | None = None

    async def error(self, error: Exception) -> None:
        if not self.down:
            log.warning("%s: NATS error: %s", self.service, type(error).__name__)

    async def disconnected(self) -> None:
        if self.nc is not None and self.nc.is_closed:
            return  # closed on purpose, not an outage
        if not self.down:
            self.down = True
            log.warning("%s: disconnected from NATS; reconnecting", self.service)

    async def reconnected(self) -> None:
        self.down = False
        log.warning("%s: reconnected to NATS", self.service)


async def connect_bus(settings: Settings, service: str, *, declare: bool = True) -> Bus:
    """Connect to NATS as ``service`` and make sure the streams exist."""
    outage = _OutageLog(service)
    nc = await nats.connect(
        servers=settings.nats_url.split(","),
        name=f"mediai-{service}",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        connect_timeout=2,
        drain_timeout=5,
        error_cb=outage.error,
        disconnected_cb=outage.disconnected,
        reconnected_cb=outage.reconnected,
    )
    outage.nc = nc
    js = nc.jetstream()
    if declare:
        await create_missing_streams(js, stream_configs(settings))
    retry = RetryPolicy(settings.consumer_max_deliver, settings.consumer_backoff)
    phi = Phi(KeyCache(nc, ttl=settings.key_cache_ttl))
    return Bus(nc=nc, js=js, source=f"mediai/{service}", phi=phi, retry=retry)
