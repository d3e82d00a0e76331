"""Events of the platform itself: tenants, access tokens and the bus's dead letters."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from shared.events.base import DEADLETTER_STREAM, Event


class TenantCreated(Event, frozen=True, kw_only=True):
    """A clinic became a tenant of the platform."""

    TYPE: ClassVar[str] = "mediai.tenant.created.v1"
    PRODUCER: ClassVar[str] = "platform (mediai tenants create, mediai up)"
    tenant_id: str
    name: str


class ApiKeyCreated(Event, frozen=True, kw_only=True):
    """An API key was issued to a tenant (only its prefix is recorded, never the key)."""

    TYPE: ClassVar[str] = "mediai.tenant.api_key_created.v1"
    PRODUCER: ClassVar[str] = "platform (mediai tenants create, mediai up)"
    key_prefix: str


class TokenIssued(Event, frozen=True, kw_only=True):
    """A LiveKit access token was issued (the audit record; never the JWT itself).

    ``patient_ref``, when the token is a patient's, is the clinic's pseudonymous id of that
    patient (``shared.naming.PATIENT_REF``), also signed into the token as the participant
    attribute ``mediai.patient_ref``; "" for anyone else (a doctor, a token made before the
    field existed).
    """

    TYPE: ClassVar[str] = "mediai.token.issued.v1"
    PRODUCER: ClassVar[str] = "token"
    room: str
    identity: str
    can_publish: bool
    can_subscribe: bool
    ttl_seconds: int
    expires_at: datetime
    # The ``mediai.role`` attribute signed into the token (shared/participants.py).
    role: str = "patient"
    patient_ref: str = ""


class DeadLettered(Event, frozen=True, kw_only=True):
    """A consumer gave up on a message: it is kept here, whole, for an operator to replay."""

    TYPE: ClassVar[str] = "mediai.bus.deadlettered.v1"
    PRODUCER: ClassVar[str] = "any consumer (shared.bus)"
    STREAM: ClassVar[str] = DEADLETTER_STREAM
    consumer: str
    stream: str
    stream_sequence: int
    original_subject: str
    original_type: str | None
    original_event_id: str | None
    original_headers: dict[str, str]
    # The message as it was received, as text (base64 when it is not UTF-8).
    original_payload: str
    payload_encoding: str  # "utf-8" | "base64"
    deliveries: int
    reason: str


EVENTS: tuple[type[Event], ...] = (TenantCreated, ApiKeyCreated, TokenIssued, DeadLettered)
