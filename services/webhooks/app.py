"""The webhooks service: ``POST /v1/webhooks/livekit``, the LiveKit -> NATS edge.

LiveKit gives webhooks no delivery guarantee: it retries, drops when its queue is full and
duplicates when our 2xx is lost. So: verify the signature against the raw body, publish one
event per webhook with LiveKit's webhook id as the event id (JetStream drops the duplicates),
answer 2xx only once JetStream has acknowledged, and 503 when it cannot, so LiveKit retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from google.protobuf.json_format import ParseError
from litestar import Litestar, Request, post
from litestar.datastructures import State
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, Operation, RequestBody, Schema
from livekit.api import TokenVerifier, WebhookReceiver
from livekit.protocol.webhook import WebhookEvent
from opentelemetry import trace

from services.webhooks.core import translate
from services.webhooks.tracing import RoomTraces, link_to_room
from shared.bus import Bus, BusUnavailableError
from shared.config import Settings
from shared.contract import errors
from shared.events.rooms import RoomStarted
from shared.http import ApiError, UnauthorizedError, create_service_app

log = logging.getLogger(__name__)


class WebhookAccepted(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The webhook is on the event log (or already was: a retried webhook is not repeated)."""

    webhook_id: str
    events: int


class WebhookRejectedError(UnauthorizedError):
    code = "invalid_signature"


def verify(receiver: WebhookReceiver, body: bytes, authorization: str | None) -> WebhookEvent:
    """The webhook, if ``authorization`` is LiveKit's valid, unexpired signature of ``body``."""
    token = (authorization or "").strip()
    if token.lower().startswith("bearer "):
        token = token[7:].strip()
    if not token:
        raise WebhookRejectedError("missing Authorization: LiveKit signs every webhook")
    try:
        # A body that is not UTF-8 comes out altered here, so its hash fails: 401, like forgery.
        hook = receiver.receive(body.decode(errors="replace"), token)
    except ParseError:
        # The signature and hash matched, so this is LiveKit's body, just not one we can read.
        raise ApiError(
            "the webhook body is not a LiveKit WebhookEvent", code="invalid_webhook"
        ) from None
    except Exception:  # noqa: BLE001 - the receiver signals bad tokens and hashes with bare Exception
        raise WebhookRejectedError(
            "the webhook signature is invalid, expired or not for this body"
        ) from None
    # Protobuf's JSON parser takes a JSON array for a message (as an empty one): not a webhook.
    if not body.lstrip().startswith(b"{"):
        raise ApiError("the webhook body is not a LiveKit WebhookEvent", code="invalid_webhook")
    return hook


@dataclass
class _WebhookOperation(Operation):
    """The raw body is read by hand (the signature covers its exact bytes), so describe it."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description="LiveKit's WebhookEvent, as LiveKit serialises it",
            content={
                "application/webhook+json": OpenAPIMediaType(
                    schema=Schema(
                        type=OpenAPIType.OBJECT,
                        description="livekit.WebhookEvent: event, id, createdAt, room, participant, "
                        "track, egressInfo, ingressInfo, numDropped",
                    )
                )
            },
        )


_ERRORS = errors(
    {
        400: {"invalid_webhook": "the signed body is not a LiveKit WebhookEvent"},
        401: {
            "invalid_signature": "a missing, forged or expired signature, or one of another "
            "body; nothing was published"
        },
        503: {
            "bus_unavailable": "the event bus did not acknowledge: LiveKit should retry (the "
            "retry is published once)"
        },
    }
)


@post(
    "/v1/webhooks/livekit",
    operation_id="receiveLiveKitWebhook",
    summary="Receive a LiveKit webhook",
    description="Called by the LiveKit server, not by tenants: the body is LiveKit's "
    "WebhookEvent JSON (application/webhook+json) and Authorization is LiveKit's JWT whose "
    "sha256 claim is the body's hash, signed with the server's API key and secret.",
    status_code=200,
    security=[{}],
    responses=_ERRORS,
    operation_class=_WebhookOperation,
)
async def receive_livekit_webhook(request: Request[Any, Any, Any], state: State) -> WebhookAccepted:
    # The bus and the receiver from the app's state rather than as dependencies: Litestar
    # resolves two or more dependencies of a handler in an anyio task group, a task each, on
    # every request (issue 13; as the token route).
    bus: Bus = state.bus
    rooms: RoomTraces = state.room_traces
    started = time.perf_counter()
    body = await request.body()
    hook = verify(state.webhook_receiver, body, request.headers.get("authorization"))
    publications = translate(hook, body=body, received_at=datetime.now(UTC))
    if not bus.nc.is_connected:
        # Fail fast rather than wait out the publish retries: LiveKit retries anyway.
        raise BusUnavailableError("NATS is not connected")
    # A sampled webhook looks up its room's trace while its event is published, not before:
    # the lookup is a NATS round trip of its own, and LiveKit's answer waits for neither twice.
    # (An unsampled one has no span to tag: no task at all.)
    linking = None
    if trace.get_current_span().is_recording():
        linking = asyncio.create_task(link_to_room(bus, rooms, publications[0]))
    try:
        for publication in publications:
            event = await bus.publish(
                publication.data,
                tenant=publication.tenant,
                key=publication.key,
                event_id=publication.event_id,
                time=publication.time,
            )
            if isinstance(publication.data, RoomStarted):
                # The room's later webhooks link to this trace without reading the log.
                rooms.remember(
                    event.tenant, event.subject, publication.data.room_sid, event.traceparent
                )
    finally:
        if linking is not None:
            await linking  # bounded (tracing.LOOKUP_SECONDS), never raises; the span is open
    if hook.num_dropped:
        log.warning(
            "LiveKit dropped %d webhook(s) before %s; the rooms read model heals at its next "
            "reconciliation, usage around %s may need a check",
            hook.num_dropped,
            publications[0].event_id,
            publications[0].time.isoformat(),
        )
    # Identities and room names stay out of the log: the type and id say enough. Debug: at
    # LiveKit's rate a line per webhook is an access log (the request's span says the same).
    log.debug(
        "webhook %s %s -> %d event(s) in %.1f ms",
        hook.event,
        publications[0].event_id,
        len(publications),
        (time.perf_counter() - started) * 1000,
    )
    return WebhookAccepted(webhook_id=publications[0].event_id, events=len(publications))


def create_app(settings: Settings) -> Litestar:
    @contextlib.asynccontextmanager
    async def receiver(app: Litestar) -> AsyncIterator[None]:
        app.state.webhook_receiver = WebhookReceiver(
            TokenVerifier(settings.livekit_api_key, settings.livekit_api_secret)
        )
        app.state.room_traces = RoomTraces()
        yield

    return create_service_app(
        service="webhooks",
        settings=settings,
        route_handlers=[receive_livekit_webhook],
        resources=[receiver],
        description="The LiveKit webhook edge: each verified webhook becomes one event on NATS.",
        # It takes webhooks with NATS alone: ready while PostgreSQL is away (its outbox relay
        # pauses), or LiveKit's webhooks would be refused and, after LiveKit's retries, lost.
        ready_without=("postgres",),
    )
