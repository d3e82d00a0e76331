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
_ESCAPED = re.compile(rb"%([0-9A-F]{2})")


def token(value: str) -> str:
    """Escape one subject token: bytes outside ``[A-Za-z0-9_-]`` become ``%XX``; empty is ``%``."""
    if not value:
        return "%"
    return _UNSAFE.sub(lambda m: b"%%%02X" % m.group(0)[0], value.encode()).decode()


def untoken(value: str) -> str:
    """The value ``token`` escaped."""
    if value == "%":
        return ""
    return _ESCAPED.sub(lambda m: bytes([int(m.group(1), 16)]), value.encode()).decode()


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


def stream_filter(stream: str, tenant: str | None = None) -> str:
    """One filter for every event of a stream (of one tenant, if given). JetStream serves one
    filter far faster than a list of per-type filters (about 5 µs of server CPU per message
    against 55 µs for six filters, measured here), so bulk readers pick types themselves
    (``unversioned_type``)."""
    if tenant is None:
        return stream_subjects(stream)
    return f"{PREFIX}.{stream}.*.*.*.{token(tenant)}.*"


def unversioned_type(subject: bytes) -> bytes:
    """The type of an event's subject without its prefix and version (``agent.usage_reported``
    of ``mediai.events.agent.usage_reported.v1.<tenant>.<key>``)."""
    parts = subject.split(b".", 5)
    return parts[2] + b"." + parts[3]


def unversioned_type_of(event_type: type[Event]) -> bytes:
    """What ``unversioned_type`` gives for the subjects of ``event_type`` (any version)."""
    return _type_tokens(event_type.TYPE).rsplit(".", 1)[0].encode()


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


def any_tenant_filter(event_type: type[Event], *, key: str) -> str:
    """A filter matching the events of one type about one key, of any tenant (the dead letters
    of one consumer, whose key is the consumer's name)."""
    return f"{PREFIX}.{event_type.STREAM}.{_type_tokens(event_type.TYPE)}.*.{token(key)}"


def max_deliveries_advisory(stream: str, consumer: str) -> str:
    """Where JetStream announces that it stopped delivering a message to ``consumer``."""
    return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}"


def scheduling_requests() -> str:
    """Every scheduling operation's subject (a wildcard, for subscriptions and permissions)."""
    return f"{PREFIX}.rpc.scheduling.*"


def keys_requests() -> str:
    """Every key service operation's subject (a wildcard, for its subscription's permission)."""
    return f"{PREFIX}.rpc.keys.*"


def worker_heartbeat(worker_id: str) -> str:
    """Where an agent worker says it is alive, every few seconds: a core NATS subject outside
    every stream (``mediai.live.agent.worker.<worker>``), so nothing stores the beats."""
    return f"{PREFIX}.live.agent.worker.{token(worker_id)}"


def worker_heartbeats() -> str:
    """Every agent worker's heartbeat subject (a wildcard, for the dispatcher and permissions)."""
    return f"{PREFIX}.live.agent.worker.*"


def inbox_prefix(user: str) -> str:
    """The reply subjects of one NATS user's connections (``_INBOX_<user>``): with a prefix per
    user, a user may subscribe to its own replies and never to another's (NATS's default,
    ``_INBOX``, is one space every connection would have to be allowed to read)."""
    return f"_INBOX_{token(user)}"


# JetStream's own API (docs.nats.io, "JetStream wire API Reference"); only the NATS
# permissions of each user (deploy.bus_users) name these subjects.
JS_API = "$JS.API"


def js_api(*tokens: str) -> str:
    """A JetStream API subject: ``js_api("STREAM", "INFO", "MEDIAI_EVENTS")``."""
    return ".".join((JS_API, *tokens))


def js_ack(stream: str, consumer: str) -> str:
    """Where acknowledgements (ack, nak, term, in progress) of one consumer's messages go."""
    return f"$JS.ACK.{stream}.{consumer}.>"


def js_flow_control(stream: str) -> str:
    """Where a push consumer's flow-control replies go (ordered consumers of any name)."""
    return f"$JS.FC.{stream}.>"
