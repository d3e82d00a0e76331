"""The event bus: streams declared in code, the connection, and one publish function.

Publishing seals the event's personal and clinical fields (``shared.phi``), sets
``Nats-Msg-Id`` to the event id (JetStream drops duplicates inside the stream's window) and
carries the trace context in the ``traceparent`` header. Consumers are in ``shared.consumer``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import PubAck
from opentelemetry import trace
from opentelemetry.trace import SpanContext, SpanKind

from shared import attributes as attr
from shared import subjects
from shared.acks import Acks
from shared.config import Settings
from shared.events import (
    CODEC,
    Envelope,
    Event,
    envelope,
)
from shared.keys import KeyCache
from shared.natsbulk import BulkClient
from shared.phi import Phi
from shared.streams import check_streams, create_missing_streams, stream_configs
from shared.telemetry import parent_of, trace_headers, traceparent_of, tracer

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

    nc: BulkClient
    js: JetStreamContext
    source: str
    # Seals what is published and opens what a consumer asks to read (an agent job swaps in
    # its dispatch's keys).
    phi: Phi
    # Acknowledgements of this connection's publishes (pipelined).
    acks: Acks
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

        Publishes of concurrent callers are pipelined on the connection (see
        ``_publish_with_retry``): many in flight, each caller answered by its own ack.

        ``key`` is the aggregate the event is about (a room name, a dispatch id); it becomes the
        CloudEvents ``subject``. Pass ``event_id`` when the event has a natural dedup key (a
        LiveKit webhook id): a second publish of the same id is dropped by JetStream.
        """
        current = trace.get_current_span().get_span_context()
        event = envelope(
            data,
            source=self.source,
            tenant=tenant,
            subject=key,
            event_id=event_id,
            time=time,
            traceparent=traceparent_of(current),
        )
        await self._publish(event, current, expected_last_subject_sequence)
        return event

    async def publish_envelope(
        self, event: Envelope, *, expected_last_subject_sequence: int | None = None
    ) -> PubAck:
        """Publish an event made earlier (an outbox row, a spooled session event) and wait for
        JetStream's ack; as ``publish``."""
        current = trace.get_current_span().get_span_context()
        return await self._publish(event, current, expected_last_subject_sequence)

    async def _publish(
        self, event: Envelope, current: SpanContext, expected_last_subject_sequence: int | None
    ) -> PubAck:
        # ``current``: the context the caller publishes in, looked up once per publish.
        event = await self.phi.seal(event)
        subject = subjects.event_subject(event.data, tenant=event.tenant, key=event.subject)
        headers = {"Nats-Msg-Id": event.id}
        if expected_last_subject_sequence is not None:
            headers["Nats-Expected-Last-Subject-Sequence"] = str(expected_last_subject_sequence)
        payload = CODEC.encode(event)
        if current.is_valid and not current.trace_flags.sampled:
            # An unsampled trace: no span to make; its context goes on, so its consumers do
            # not trace it either.
            trace_headers(current, headers)
            return await self._publish_with_retry(subject, payload, headers)
        # Published later than made (an outbox row, a spooled session event), the event still
        # belongs to the trace it was made in: its own traceparent.
        with _tracer.start_as_current_span(
            f"publish {event.type}",
            context=None if current.is_valid else parent_of(event.traceparent),
            kind=SpanKind.PRODUCER,
            attributes={
                attr.MESSAGING_SYSTEM: "nats",
                attr.MESSAGING_OPERATION: "send",
                attr.MESSAGING_MESSAGE_ID: event.id,
                attr.EVENT_TYPE: event.type,
                attr.TENANT: event.tenant,
            },
        ) as span:
            trace_headers(span.get_span_context(), headers)  # the consumer's span: its child
            return await self._publish_with_retry(subject, payload, headers)

    async def _publish_with_retry(
        self, subject: str, payload: bytes, headers: dict[str, str]
    ) -> PubAck:
        # Pipelined (shared.acks): many publishes of concurrent callers in flight at once, each
        # caller waiting for its own ack. Retrying with the same Nats-Msg-Id is safe: if the
        # first attempt did land, JetStream recognises the id and the retry changes nothing.
        for attempt in range(1, self.publish_attempts + 1):
            try:
                return await self.acks.publish(
                    subject, payload, headers, timeout=self.publish_timeout
                )
            except (
                TimeoutError,
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


# The NATS users and passwords of a local stack, written by `mediai up` into its data dir (mode
# 0600). Only operator commands run on that machine read it (the operator's entry); the stack
# hands every other process its own user in its environment.
CREDENTIALS_FILE = "nats-users.json"
OPERATOR_USER = "operator"


def nats_login(settings: Settings) -> tuple[str, str] | None:
    """Who this process is on NATS: its own user (NATS_USER, NATS_PASSWORD), or else the
    operator of the local stack on ``settings.data_dir``; None when there is neither."""
    if settings.nats_user is not None:
        return settings.nats_user, settings.nats_password or ""
    try:
        users = json.loads((settings.data_dir / CREDENTIALS_FILE).read_text())
    except FileNotFoundError:
        return None
    return OPERATOR_USER, str(users[OPERATOR_USER])


def nats_options(settings: Settings) -> dict[str, Any]:
    """The options of ``nats.connect`` every process uses: the servers, its user and password,
    its own reply subjects (``_INBOX_<user>``), and the CA of a TLS server."""
    options: dict[str, Any] = {"servers": settings.nats_url.split(",")}
    login = nats_login(settings)
    if login is not None:
        options.update(
            user=login[0], password=login[1], inbox_prefix=subjects.inbox_prefix(login[0])
        )
    if settings.nats_ca is not None:
        options["tls"] = ssl.create_default_context(cafile=str(settings.nats_ca))
    return options


async def connect_bus(
    settings: Settings, service: str, *, streams: Literal["create", "check", "skip"] = "check"
) -> Bus:
    """Connect to NATS as ``service``. ``streams``: ``check`` logs one line for each stream
    missing or unlike its declaration; ``create`` also creates the missing ones, which only the
    operator may (``mediai up``, ``mediai streams apply``): services find them declared; ``skip``
    for a process whose user may not read stream info (an agent)."""
    outage = _OutageLog(service)
    # A BulkClient: replays read on this connection without a message object per event.
    nc = BulkClient()
    await nc.connect(
        **nats_options(settings),
        name=f"mediai-{service}",
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,  # type: ignore[arg-type]  # nats-py accepts seconds as float
        connect_timeout=2,
        drain_timeout=5,
        error_cb=outage.error,
        disconnected_cb=outage.disconnected,
        reconnected_cb=outage.reconnected,
    )
    outage.nc = nc
    js = nc.jetstream()
    if streams == "create":
        await create_missing_streams(js, stream_configs(settings))
    elif streams == "check":
        await check_streams(js, stream_configs(settings))
    retry = RetryPolicy(settings.consumer_max_deliver, settings.consumer_backoff)
    phi = Phi(KeyCache(nc, ttl=settings.key_cache_ttl))
    return Bus(nc=nc, js=js, source=f"mediai/{service}", phi=phi, acks=Acks(nc), retry=retry)
