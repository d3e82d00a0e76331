"""The one subject scheme of the bus; no other code builds NATS subjects.

An event's subject is ``mediai.<stream>.<type without "mediai.">.<tenant>.<key>``, e.g.
``mediai.events.token.issued.v1.t0abc.consult-7``, so a consumer can filter by stream, by
event type, by tenant, or by one aggregate instance. Tokens that come from outside (tenant
ids, room names, identities) are escaped so they never contain ``.``, ``*``, ``>`` or spaces.
"""

from __future__ import annotations

import re

from shared.events import Event

PREFIX = "mediai"
_UNSAFE = re.compile(rb"[^A-Za-z0-9_-]")


def token(value: str) -> str:
    """Escape one subject token: bytes outside ``[A-Za-z0-9_-]`` become ``%XX``; empty is ``%``."""
    if not value:
        return "%"
    return _UNSAFE.sub(lambda m: b"%%%02X" % m.group(0)[0], value.encode()).decode()


def stream_name(stream: str) -> str:
    """The JetStream stream name of a logical stream (``events`` -> ``MEDIAI_EVENTS``)."""
    return f"{PREFIX}_{stream}".upper()


def stream_subjects(stream: str) -> str:
    return f"{PREFIX}.{stream}.>"


def _type_tokens(event_type: str) -> str:
    if not event_type.startswith(f"{PREFIX}."):
        raise ValueError(f"event type {event_type!r} does not start with {PREFIX}.")
    return event_type.removeprefix(f"{PREFIX}.")


def event_subject(event: Event, *, tenant: str, key: str) -> str:
    """Where an event is published: its stream, its type, its tenant and its aggregate key."""
    return f"{PREFIX}.{event.STREAM}.{_type_tokens(event.TYPE)}.{token(tenant)}.{token(key)}"


def type_filter(event_type: type[Event], tenant: str | None = None) -> str:
    """A filter matching every event of one type (of one tenant, if given)."""
    tenant_token = "*" if tenant is None else token(tenant)
    return f"{PREFIX}.{event_type.STREAM}.{_type_tokens(event_type.TYPE)}.{tenant_token}.*"


def scheduling_request_subject(operation: str) -> str:
    """Where the scheduling service answers one request/reply operation (``book``, ...).

    A core NATS subject, ``mediai.rpc.scheduling.<operation>``: outside every stream's subjects,
    so JetStream never stores or acknowledges a request; the service answers in a queue group.
    """
    return f"{PREFIX}.rpc.scheduling.{token(operation)}"


def keys_request_subject(operation: str) -> str:
    """Where the key service answers one operation (``for_sealing``, ``for_dispatch``, ...):
    ``mediai.rpc.keys.<operation>``, core NATS like the scheduling RPC. One subject per
    operation, so NATS permissions can let an agent ask only ``for_dispatch``."""
    return f"{PREFIX}.rpc.keys.{token(operation)}"


def any_version_filter(event_type: type[Event], tenant: str | None = None) -> str:
    """A filter matching every version of one event type (``…usage_reported.*``): replays read
    old versions too, and the codec upcasts them to the current one."""
    tenant_token = "*" if tenant is None else token(tenant)
    unversioned = _type_tokens(event_type.TYPE).rsplit(".", 1)[0]
    return f"{PREFIX}.{event_type.STREAM}.{unversioned}.*.{tenant_token}.*"


def key_filter(event_type: type[Event], *, tenant: str, key: str) -> str:
    """A filter matching the events of one type about one aggregate (e.g. one dispatch)."""
    type_tokens = _type_tokens(event_type.TYPE)
    return f"{PREFIX}.{event_type.STREAM}.{type_tokens}.{token(tenant)}.{token(key)}"


def max_deliveries_advisory(stream: str, consumer: str) -> str:
    """Where JetStream announces that it stopped delivering a message to ``consumer``."""
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}"
