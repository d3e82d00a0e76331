"""Events of the platform itself: tenants, access tokens and the bus's dead letters."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar

from shared.events.base import DEADLETTER_STREAM, Event
from shared.events.privacy import PLAIN, Personal, Plain, Pseudonym


class TenantCreated(Event, frozen=True, kw_only=True):
    """A clinic became a tenant of the platform."""

    TYPE: ClassVar[str] = "mediai.tenant.created.v1"
    PRODUCER: ClassVar[str] = "platform (mediai tenants create, mediai up)"
    tenant_id: Plain
    # The clinic's (a legal person's) name: not personal data under LGPD.
    name: Plain


class ApiKeyCreated(Event, frozen=True, kw_only=True):
    """An API key was issued to a tenant (only its prefix is recorded, never the key)."""

    TYPE: ClassVar[str] = "mediai.tenant.api_key_created.v1"
    PRODUCER: ClassVar[str] = "platform (mediai tenants create, mediai up)"
    key_prefix: Plain


class TokenIssued(Event, frozen=True, kw_only=True):
    """A LiveKit access token was issued (the audit record; never the JWT itself).

    ``patient_ref``, when the token is a patient's, is the clinic's pseudonymous id of that
    patient (``shared.naming.PATIENT_REF``), also signed into the token as the participant
    attribute ``mediai.patient_ref``; "" for anyone else (a doctor, a token made before the
    field existed).
    """

    TYPE: ClassVar[str] = "mediai.token.issued.v1"
    PRODUCER: ClassVar[str] = "token"
    room: Pseudonym
    identity: Pseudonym
    can_publish: bool
    can_subscribe: bool
    ttl_seconds: int
    expires_at: datetime
    # The ``mediai.role`` attribute signed into the token (shared/participants.py).
    role: Plain = "patient"
    patient_ref: Pseudonym = ""


class DeadLettered(Event, frozen=True, kw_only=True):
    """A consumer gave up on a message: it is kept here, whole, for an operator to replay."""

    TYPE: ClassVar[str] = "mediai.bus.deadlettered.v1"
    PRODUCER: ClassVar[str] = "any consumer (shared.bus)"
    STREAM: ClassVar[str] = DEADLETTER_STREAM
    consumer: Plain
    stream: Plain
    stream_sequence: int
    # Built from room names and identities only.
    original_subject: Pseudonym
    original_type: Plain | None
    original_event_id: Plain | None
    original_headers: Annotated[dict[str, str], PLAIN]
    # The message as it was received, as text (base64 when it is not UTF-8). Its own personal
    # fields were sealed by its producer; sealed again here (an undecodable or pre-encryption
    # message may hold anything).
    original_payload: Personal
    payload_encoding: Plain  # "utf-8" | "base64"
    deliveries: int
    # May quote an exception's message, which may quote data.
    reason: Personal


class DataKeyDestroyed(Event, frozen=True, kw_only=True):
    """A data key was destroyed: everything sealed with it, in every stream, dead letter, table
    and backup, can no longer be read (crypto-shredding; see docs/privacy.md).

    ``purpose`` is ``personal`` (a patient's personal data, destroyed on erasure), ``clinical``
    (a patient's clinical record, destroyed when the clinic's retention of it ends) or
    ``tenant`` (data about no patient). ``reason``: ``erasure``, ``retention`` or ``operator``.
    Every process evicts the key from its cache when it sees this event (a core NATS
    subscription to its subject), so a destroyed key stops working everywhere within moments.
    Keyed by ``key_id``.
    """

    TYPE: ClassVar[str] = "mediai.data_key.destroyed.v1"
    PRODUCER: ClassVar[str] = "keys"
    key_id: Plain
    purpose: Plain
    patient_ref: Pseudonym = ""
    reason: Plain
    destroyed_at: datetime


EVENTS: tuple[type[Event], ...] = (
    TenantCreated,
    ApiKeyCreated,
    TokenIssued,
    DeadLettered,
    DataKeyDestroyed,
)
