"""Helpers for tests: free ports, settings for a private stack, and waiting on events."""

from __future__ import annotations

import asyncio
import os
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import asyncpg
from nats.js.api import ConsumerConfig, DeliverPolicy

from deploy.supervisor import port_in_use
from shared import subjects
from shared.bus import Bus
from shared.config import PORT_NAMES, Settings
from shared.db import apply_migrations, discover_migrations
from shared.events import CODEC, Envelope, Event

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_block(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive free ports below the kernel's ephemeral range: ports
    the OS never hands out as free ones (``free_port``) nor as a connection's own port, so a
    block stays free for a NATS cluster's nodes (client port + i, route port + i)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    floor = 10000 if low > 12000 else 1024
    for _ in range(500):
        base = random.randrange(floor, low - count)
        if not any(port_in_use(host, port) for port in range(base, base + count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports below {low}")


def stack_settings(data_dir: Path, **overrides: object) -> Settings:
    """Settings for a stack on free ports under ``data_dir``, as ``mediai up`` would run it;
    ``nats_nodes=3`` gives a NATS cluster its blocks of ports (``port_block``)."""
    ports = {f"{name}_port": free_port() for name in PORT_NAMES}
    host = "127.0.0.1"
    nodes = int(overrides.get("nats_nodes", 1))  # type: ignore[call-overload]
    if nodes > 1:
        ports["nats_port"], ports["nats_cluster_port"] = port_block(nodes), port_block(nodes)
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
        # Timeline entries link to their traces (services/sessions).
        "trace_url": "http://traces.test/trace/{traceId}",
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
