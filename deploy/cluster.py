"""The cluster topology of the local stack (``mediai up --cluster``, docs/scaling.md): the parts
a single-node stack does not have, the Redis of the LiveKit nodes and the balancer in front of
them, and how nodes and replicas are named.

Everything else scales by count on the same code: NATS nodes (``deploy.nats``), LiveKit nodes
and service replicas (``deploy.stack``), each with its own ports, data folder and log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from deploy.supervisor import Part, executable
from shared.config import Settings

DEPLOY_DIR = Path(__file__).resolve().parent

# What ``mediai up --cluster`` runs (each also a setting, MEDIAI_<NAME>, to run other counts).
TOPOLOGY = {"nats_nodes": 3, "livekit_nodes": 2, "service_replicas": 2, "agent_pools": 2}


def node_name(base: str, node: int, count: int) -> str:
    """A part's name: ``rooms`` alone, ``rooms-1``, ``rooms-2``... when there are several."""
    return base if count == 1 else f"{base}-{node}"


async def _redis_ready(host: str, port: int) -> bool:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        return await reader.readline() == b"+PONG\r\n"
    finally:
        writer.close()


def redis_part(settings: Settings) -> Part:
    """The Redis the LiveKit nodes share (Debian's redis-server, installed by ``make install``).
    It holds only LiveKit's routing state (which node hosts which room), so it keeps nothing on
    disk: after a restart the nodes write it again."""
    folder = (settings.data_dir / "redis").resolve()

    async def prepare() -> None:
        folder.mkdir(parents=True, exist_ok=True)

    return Part(
        name="redis",
        argv=[
            executable("redis-server"),
            "--bind",
            settings.host,
            "--port",
            str(settings.redis_port),
            "--dir",
            str(folder),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        url=f"redis://{settings.host}:{settings.redis_port}",
        ports=[("MEDIAI_REDIS_PORT", settings.redis_port)],
        ready=lambda: _redis_ready(settings.host, settings.redis_port),
        prepare=prepare,
    )


def livekit_balancer_part(settings: Settings, ready: Callable[[], Awaitable[bool]]) -> Part:
    """Caddy on ``livekit_port`` balancing signalling (WebSockets) and the Server API over the
    LiveKit nodes, with active health checks: clients, services and agent workers keep one
    LIVEKIT_URL. Media does not pass through it (each node's RTC ports are its own). ``ready``
    probes a node through it."""
    caddy_home = (settings.data_dir / "caddy-livekit").resolve()
    upstreams = " ".join(
        f"{settings.host}:{signal}" for signal, _, _ in settings.livekit_node_ports()
    )
    return Part(
        name="livekit-lb",
        argv=[
            executable("caddy"),
            "run",
            "--config",
            str(DEPLOY_DIR / "Caddyfile.livekit"),
            "--adapter",
            "caddyfile",
        ],
        url=settings.livekit_url,
        ports=[("MEDIAI_LIVEKIT_PORT", settings.livekit_port)],
        env={
            "MEDIAI_LIVEKIT_ADDRESS": f"{settings.host}:{settings.livekit_port}",
            "MEDIAI_GATEWAY_HOST": settings.host,
            "MEDIAI_LIVEKIT_UPSTREAMS": upstreams,
            "XDG_DATA_HOME": str(caddy_home / "data"),
            "XDG_CONFIG_HOME": str(caddy_home / "config"),
        },
        ready=ready,
    )
