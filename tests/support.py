"""Helpers for tests: free ports, settings for a private stack, and waiting on events."""

from __future__ import annotations

import asyncio
import os
import random
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import asyncpg
import httpx
from nats.js.api import ConsumerConfig, DeliverPolicy

from deploy.supervisor import port_in_use
from shared import subjects
from shared.bus import Bus
from shared.config import PORT_NAMES, Settings
from shared.db import apply_migrations, discover_migrations
from shared.events import CODEC, Envelope, Event

T = TypeVar("T")
_GIVEN: set[int] = set()  # every port port_block handed out in this process
_RANDOM = random.SystemRandom()  # whatever a test seeds, two test runs pick apart


def free_port() -> int:
    """A free port below the kernel's ephemeral range (``port_block``). A port the kernel hands
    out as free (bind to port 0) is from that range, which it also gives connections as their
    own ports: on a machine running several stacks, an outgoing connection took one between the
    test picking it and its server binding it ("could not create listen socket")."""
    return port_block(1)


def port_block(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive free ports below the kernel's ephemeral range: ports
    the OS never hands out as free ones (bind to port 0) nor as a connection's own port, so a
    block stays free for a NATS cluster's nodes (client port + i, route port + i). Never a port
    this process handed out before: the ports of a stack are all picked before any is bound."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    floor = 10000 if low > 12000 else 1024
    for _ in range(500):
        base = _RANDOM.randrange(floor, low - count)
        block = range(base, base + count)
        if not _GIVEN.intersection(block) and not any(port_in_use(host, p) for p in block):
            _GIVEN.update(block)
            return base
    raise RuntimeError(f"no {count} consecutive free ports below {low}")


def _cluster_ports() -> dict[str, int]:
    """Ports of a cluster stack from one free block: a replica's port is its service's + 100
    each, a LiveKit node's 10 above the balancer's (shared.config), so single free ports could
    collide with them."""
    base = port_block(400)
    singles = [n for n in PORT_NAMES if n not in ("nats", "nats_cluster")]
    livekit = {"livekit": 0, "livekit_rtc_tcp": 1, "livekit_rtc_udp": 2}
    others = [n for n in singles if n not in livekit]
    ports = {f"{name}_port": base + 40 + i for i, name in enumerate(others)}
    ports.update({f"{name}_port": base + offset for name, offset in livekit.items()})
    return ports


def stack_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings for a stack on free ports under ``data_dir``, as ``mediai up`` would run it;
    ``nats_nodes=3`` gives a NATS cluster its blocks of ports (``port_block``)."""
    ports = {f"{name}_port": free_port() for name in PORT_NAMES}
    host = "127.0.0.1"
    nodes = int(overrides.get("nats_nodes", 1))  # type: ignore[call-overload]
    if nodes > 1:
        ports["nats_port"], ports["nats_cluster_port"] = port_block(nodes), port_block(nodes)
    if int(overrides.get("service_replicas", 1)) > 1 or int(overrides.get("livekit_nodes", 1)) > 1:  # type: ignore[call-overload]
        ports.update(_cluster_ports())
    values: dict[str, object] = {
        "data_dir": data_dir,
        "host": host,
        **ports,
        "nats_replicas": min(3, nodes),
        "nats_url": ",".join(f"nats://{host}:{ports['nats_port'] + i}" for i in range(nodes)),
        "database_url": f"postgresql://postgres@{host}:{ports['postgres_port']}/mediai",
        "livekit_url": f"ws://{host}:{ports['livekit_port']}",
        "livekit_api_key": "mediai-test",
        "livekit_api_secret": "mediai-test-secret-0123456789abcdef",
        # A vanished agent fails its dispatch sooner than in production (60 s).
        "agent_lost_grace": 10,
        # No JVM per test session: the tests that look at traces start Zipkin, or a receiver.
        "zipkin": False,
        # Timeline entries link to their traces (services/sessions).
        "trace_url_template": "http://traces.test/trace/{trace_id}",
    }
    # MEDIAI_SERVICES limits the services started, as for `mediai up` (default: all).
    selected = os.environ.get("MEDIAI_SERVICES", "")
    values["services"] = tuple(s for s in selected.split(",") if s)
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def until(condition: Callable[[], object], timeout: float = 10.0, step: float = 0.05) -> None:
    """Wait until ``condition()`` is true: state changed by another task or process, which
    announces nothing to wait on; fail after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polled on purpose, see the docstring
            await asyncio.sleep(step)


async def eventually(
    check: Callable[[], Awaitable[T]], timeout: float = 15.0, step: float = 0.05
) -> T:
    """The first truthy result of ``await check()`` (a read model in another process, an HTTP
    answer), polled until ``timeout``; the failure says the last value seen."""
    result = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = await check()
                if result:
                    return result
                await asyncio.sleep(step)
    except TimeoutError:
        raise AssertionError(f"still {result!r} after {timeout}s") from None


class EventStream:
    """Events of some types published after it was opened, in order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Envelope] = asyncio.Queue()

    async def next(self, timeout: float = 20.0) -> Envelope:
        return await asyncio.wait_for(self.queue.get(), timeout)

    async def wait_for(self, predicate: object = None, timeout: float = 20.0) -> Envelope:
        """The next event for which ``predicate(event)`` is true."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.queue.get()
                if predicate is None or predicate(event):  # type: ignore[operator]
                    return event

    def drain(self) -> list[Envelope]:
        events = []
        while not self.queue.empty():
            events.append(self.queue.get_nowait())
        return events


@asynccontextmanager
async def watch(
    bus: Bus, *types: type[Event], tenant: str | None = None, opened: bool = True
) -> AsyncIterator[EventStream]:
    """Subscribe (an ordered, ephemeral JetStream consumer) to new events of ``types``; their
    personal fields opened, as a consumer with ``opens=True`` sees them (or as published, sealed,
    with ``opened=False``)."""
    stream = EventStream()

    async def on_message(msg: object) -> None:
        event = CODEC.decode(msg.data)  # type: ignore[attr-defined]
        stream.queue.put_nowait(await bus.phi.open(event) if opened else event)

    subscriptions = []
    for event_type in types:
        subscriptions.append(
            await bus.js.subscribe(
                subjects.type_filter(event_type, tenant),
                cb=on_message,
                ordered_consumer=True,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
            )
        )
    try:
        yield stream
    finally:
        for subscription in subscriptions:
            await subscription.unsubscribe()


@asynccontextmanager
async def private_database(settings: Settings, prefix: str) -> AsyncIterator[str]:
    """The URL of a new database on the stack's Postgres with every migration applied, dropped
    afterwards: for rows the stack's services must not see (their outbox relays, their pruning)."""
    name = f"{prefix}_{os.urandom(4).hex()}"
    server = settings.database_url.rsplit("/", 1)[0]
    admin = await asyncpg.connect(f"{server}/postgres")
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(f"{server}/{name}")
    try:
        await apply_migrations(conn, discover_migrations())
    finally:
        await conn.close()
    try:
        yield f"{server}/{name}"
    finally:
        admin = await asyncpg.connect(f"{server}/postgres")
        try:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@asynccontextmanager
async def live_dispatch(api: httpx.AsyncClient) -> AsyncIterator[str]:
    """A real dispatch of ``api``'s tenant, live (its agent in an empty room, where it says
    nothing) until the end: the agent's scheduling requests name it and act for its tenant."""
    body = {
        "room": f"agenda-{uuid.uuid4().hex[:8]}",
        "role": "generic",
        "instructionsMode": "replace",
    }
    # The stand-in's models (tests/standin): the agent really starts, and stays until ended.
    models = {"stt": "openai/whisper-1", "llm": "openai/gpt-4o-mini", "tts": "openai/tts-1"}

    async def accepted() -> httpx.Response | None:
        # At capacity (the session's one worker holds the last tests' agents until their
        # sessions end) the API refuses at once, with Retry-After: ask again until a slot is free.
        answer = await api.post("/v1/agents", json={**body, **models, "instructions": "Teste."})
        refused = answer.status_code == 503 and "agents_at_capacity" in answer.text
        return None if refused else answer

    response = await eventually(accepted, timeout=90, step=1.0)
    assert response.status_code == 202, response.text
    dispatch_id: str = response.json()["id"]
    try:
        yield dispatch_id
    finally:
        await api.delete(f"/v1/agents/{dispatch_id}")


def post_raw(gateway: str, path: str, size: int) -> tuple[int, str]:
    """Announce a body of ``size`` bytes and read the answer: the gateway answers from the
    Content-Length alone, before any of the body is sent."""
    host, port = gateway.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        connection.sendall(f"{head}Content-Length: {size}\r\n\r\n".encode())
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head_text, _, body = answer.decode().partition("\r\n\r\n")
    return int(head_text.split()[1]), body
