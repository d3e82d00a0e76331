"""One NATS user per component, with subject permissions derived from the code.

What a component may publish and subscribe to is not written by hand: its events are the event
types whose ``PRODUCER`` names it (their subjects from ``shared.subjects``), its durable
consumers are the ``ConsumerSpec``s its app runs (each gives the JetStream API subjects of that
one durable: create, fetch, ack, info, its max-deliveries advisory, its dead letters), and the
little it does besides (answering or calling a request/reply service, reading a stream with
ephemeral consumers, getting one message by sequence) is declared below in ``EXTRAS``, next to
nothing else. ``users_block`` renders the NATS server's ``authorization`` block from it, for
the local stack (passwords generated per stack) and for production (passwords from the
server's environment). What the server enforces, and what our code does, is in
docs/deployment.md ("Who may do what on the bus").
"""

from __future__ import annotations

import importlib
import json
import os
import re
import secrets
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from services import http_services
from shared import subjects
from shared.bus import CREDENTIALS_FILE, OPERATOR_USER
from shared.consumer import ConsumerSpec
from shared.events import CODEC, DEADLETTER_STREAM, EVENTS_STREAM, PHI_STREAM, DeadLettered, Event
from shared.events.agents import AgentCommandIssued, AgentEndRequested
from shared.events.platform import ApiKeyRevoked, DataKeyDestroyed
from shared.events.rooms import RoomStarted
from shared.keys_api import (
    DestroyKeysRequest,
    DispatchKeysRequest,
    OpeningKeyRequest,
    SealingKeyRequest,
)

AGENT = "agent"
POOL = "pool"
# Producers named in an event's PRODUCER that are not a NATS user of their own: the platform's
# events are published by operator commands; a dead letter by whoever runs the consumer.
_PLATFORM, _ANY_CONSUMER = "platform", "any"
_STREAMS = tuple(subjects.stream_name(s) for s in (EVENTS_STREAM, PHI_STREAM, DEADLETTER_STREAM))


@dataclass(frozen=True)
class Extras:
    """What a component does on the bus besides publishing its events and running its durable
    consumers."""

    # Request/reply subjects it answers (in a queue group); its replies go to the requester's
    # inbox, whatever it is (NATS's allow_responses).
    serves: tuple[str, ...] = ()
    # Request/reply subjects it calls.
    requests: tuple[str, ...] = ()
    # Streams it reads with ephemeral consumers of any filter (ordered consumers, replays).
    reads: tuple[str, ...] = ()
    # Streams it reads single messages of, by sequence.
    gets: tuple[str, ...] = ()
    # Event types it follows with ephemeral consumers filtered to one subject of that type:
    # the server checks the filter (the consumer-create subject carries it).
    follows: tuple[type[Event], ...] = ()
    # Reads stream and account info (a service's start-up check and /readyz). Stream info can
    # list a stream's subjects, which carry room names and dispatch ids: not for the agent.
    infos: bool = True
    # Core NATS subjects, outside every stream, it publishes (beats) and subscribes to.
    beats: tuple[str, ...] = ()
    hears: tuple[str, ...] = ()
    # The key service operations it may call (shared.keys_api): a service's KeyCache fetches
    # keys to seal and to open; an agent job only its own dispatch's keys, by dispatch id.
    keys: tuple[str, ...] = (SealingKeyRequest.OPERATION, OpeningKeyRequest.OPERATION)


EXTRAS: dict[str, Extras] = {
    # The dispatcher follows every pool's worker events (its registry of workers) and every
    # worker's heartbeat (its capacity), a pool its own workers' registrations; a duplicate
    # publish reads the event the log holds.
    "dispatcher": Extras(
        reads=(subjects.stream_name(EVENTS_STREAM),),
        gets=(subjects.stream_name(EVENTS_STREAM),),
        hears=(subjects.worker_heartbeats(),),
    ),
    "pool": Extras(
        reads=(subjects.stream_name(EVENTS_STREAM),), gets=(subjects.stream_name(EVENTS_STREAM),)
    ),
    # Audits (POST /v1/audits) replay the events stream.
    "billing": Extras(reads=(subjects.stream_name(EVENTS_STREAM),)),
    # A webhook's span links to its room's trace, read from the room's last RoomStarted.
    "webhooks": Extras(gets=(subjects.stream_name(RoomStarted.STREAM),)),
    # A patient's export reads the events it names from the log, by sequence; a patient's
    # erasure destroys their personal-data key (the only component that may).
    "scheduling": Extras(
        serves=(subjects.scheduling_requests(),),
        gets=(subjects.stream_name(EVENTS_STREAM), subjects.stream_name(PHI_STREAM)),
        keys=(
            SealingKeyRequest.OPERATION,
            OpeningKeyRequest.OPERATION,
            DestroyKeysRequest.OPERATION,
        ),
    ),
    "keys": Extras(serves=(subjects.keys_requests(),)),
    AGENT: Extras(
        requests=(subjects.scheduling_requests(),),
        follows=(AgentEndRequested, AgentCommandIssued),
        beats=(subjects.worker_heartbeats(),),
        infos=False,
        keys=(DispatchKeysRequest.OPERATION,),
    ),
}


def components() -> tuple[str, ...]:
    """Every component with a NATS user of its own: the HTTP services and the agent workers
    (the operator, who may do anything, is apart)."""
    return (*http_services(), AGENT)


def producers(event_type: type[Event]) -> set[str]:
    """The components an event's ``PRODUCER`` names: ``"dispatcher; agent (a draining
    worker)"`` is dispatcher and agent (the first word of each ``;`` part)."""
    return {m.group(1) for m in re.finditer(r"(?:^|;)\s*([a-z]+)", event_type.PRODUCER)}


@cache
def consumer_specs(component: str) -> tuple[ConsumerSpec[object], ...]:
    """The durable consumers a service's app can run: every ``ConsumerSpec`` in the modules of
    its package once its app is imported (the agent runs none)."""
    if component not in http_services():
        return ()
    importlib.import_module(f"services.{component}.app")
    found: dict[str, ConsumerSpec[object]] = {}
    for name, module in list(sys.modules.items()):
        if name.startswith(f"services.{component}.") and module is not None:
            for value in vars(module).values():
                if isinstance(value, ConsumerSpec):
                    found[value.durable] = value
    return tuple(found[d] for d in sorted(found))


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    allow_responses: bool = False


def _durable(spec: ConsumerSpec[object]) -> tuple[list[str], list[str]]:
    """Publish and subscribe subjects of one durable consumer (shared.consumer)."""
    stream, durable = spec.stream, spec.durable
    publish = [
        subjects.js_api("CONSUMER", "DURABLE", "CREATE", stream, durable),
        subjects.js_api("CONSUMER", "INFO", stream, durable),
        subjects.js_api("CONSUMER", "MSG", "NEXT", stream, durable),
        subjects.js_ack(stream, durable),
        # A max-deliveries advisory names the message; the consumer reads it to dead-letter it.
        subjects.js_api("STREAM", "MSG", "GET", stream),
        subjects.any_tenant_filter(DeadLettered, key=durable),
    ]
    return publish, [subjects.max_deliveries_advisory(stream, durable)]


def permissions(component: str) -> Permissions:
    """What ``component``'s NATS user may publish and subscribe to."""
    if component == OPERATOR_USER:
        return Permissions(publish=(">",), subscribe=(">",), allow_responses=True)
    extras = EXTRAS.get(component, Extras())
    publish = [subjects.type_filter(t) for t in CODEC.types.values() if component in producers(t)]
    subscribe = [f"{subjects.inbox_prefix(component)}.>"]
    for spec in consumer_specs(component):
        pub, sub = _durable(spec)
        publish += pub
        subscribe += sub
    if extras.infos:
        publish += [subjects.js_api("INFO")]
        publish += [subjects.js_api("STREAM", "INFO", stream) for stream in _STREAMS]
    for stream in extras.reads:
        publish += [
            subjects.js_api("CONSUMER", "CREATE", stream),
            subjects.js_api("CONSUMER", "CREATE", stream, "*"),
            subjects.js_api("CONSUMER", "CREATE", stream, "*", ">"),
            subjects.js_api("CONSUMER", "INFO", stream, "*"),
            subjects.js_api("CONSUMER", "MSG", "NEXT", stream, "*"),
            subjects.js_flow_control(stream),
        ]
    publish += [subjects.js_api("STREAM", "MSG", "GET", stream) for stream in extras.gets]
    for event_type in extras.follows:
        stream = subjects.stream_name(event_type.STREAM)
        filter_subject = subjects.type_filter(event_type)
        publish += [subjects.js_api("CONSUMER", "CREATE", stream, "*", filter_subject)]
    publish += extras.requests
    publish += extras.beats
    publish += [subjects.keys_request_subject(operation) for operation in extras.keys]
    # Whoever holds keys drops one the moment it is destroyed (shared.keys).
    subscribe += [subjects.type_filter(DataKeyDestroyed), *extras.serves, *extras.hears]
    if component in http_services():
        # An HTTP service drops a revoked API key from its cache at once (shared.tenants).
        subscribe.append(subjects.type_filter(ApiKeyRevoked))
    return Permissions(
        publish=tuple(dict.fromkeys(publish)),
        subscribe=tuple(dict.fromkeys(subscribe)),
        allow_responses=bool(extras.serves),
    )


def users() -> tuple[str, ...]:
    """Every NATS user of the system, the operator last."""
    return (*components(), OPERATOR_USER)


def _allow(direction: str, subjects_allowed: tuple[str, ...]) -> list[str]:
    """``publish: {allow: [...]}`` with one subject a line (reviewable diffs)."""
    items = ",\n".join(f"          {json.dumps(subject)}" for subject in subjects_allowed)
    return [f"        {direction}: {{allow: [", items, "        ]}"]


def users_block(password: Callable[[str], str], leave_out: tuple[str, ...] = ()) -> str:
    """The NATS server's ``authorization`` block: every user, its password as ``password(user)``
    renders it (a quoted string, or a ``$VARIABLE`` the server reads from its environment),
    and its permissions."""
    lines = ["authorization {", "  users = ["]
    for user in (u for u in users() if u not in leave_out):
        allowed = permissions(user)
        lines += [
            "    {",
            f"      user: {json.dumps(user)}",
            f"      password: {password(user)}",
            "      permissions: {",
            *_allow("publish", allowed.publish),
            *_allow("subscribe", allowed.subscribe),
        ]
        if allowed.allow_responses:
            lines.append("        allow_responses: true")
        lines += ["      }", "    }"]
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def password_variable(user: str) -> str:
    """The server's environment variable holding ``user``'s password in production."""
    return f"MEDIAI_NATS_{user.upper()}_PASSWORD"


PRODUCTION_HEADER = """\
# Generated by `mediai docs nats-users` from the code (deploy/bus_users.py); do not edit by hand
# (CI checks it). Each component's NATS user and what it may publish and subscribe to; the
# passwords come from the server's environment (deploy/production/.env.example).
"""


def production_users() -> str:
    """deploy/production/nats/users.conf: the users block with passwords from the environment."""
    # No pool service in production: an orchestrator runs the agent workers (docs/deployment.md).
    return PRODUCTION_HEADER + users_block(
        lambda user: f"${password_variable(user)}", leave_out=(POOL,)
    )


def ensure_credentials(data_dir: Path) -> dict[str, str]:
    """The local stack's password of every user, generated once per data dir and kept in it
    (mode 0600); a user added by a newer release gets its password on the next start."""
    path = data_dir / CREDENTIALS_FILE
    known: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
    wanted = {user: known.get(user) or secrets.token_urlsafe(24) for user in users()}
    if wanted != known:
        data_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(wanted, file, indent=2)
        partial.replace(path)
    return wanted


def local_users_block(passwords: Mapping[str, str]) -> str:
    """The users block of the local stack's NATS servers (the passwords in the config file,
    which is mode 0600 like the credentials)."""
    return users_block(lambda user: json.dumps(passwords[user]))
