"""The local NATS JetStream: one server, or a cluster of 3 (``MEDIAI_NATS_NODES=3``) on this
machine, each node its own ports, store folder and generated config.

Every node has the users of deploy/bus_users.py (one per component, with its subject
permissions; passwords generated per data dir): nothing connects without a user.

Every node fsyncs each write before JetStream acknowledges it (``sync_interval: always``), as
production does (deploy/production/nats/nats.conf says why): with NATS's default (a sync every
two minutes) an acknowledged event survives a killed process (it is in the page cache) but not
a power cut or kernel crash (Jepsen, NATS 2.12).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import nats
from nats.js.api import StorageType, StreamConfig

from deploy.bus_users import ensure_credentials, local_users_block
from deploy.supervisor import Part, StackError, executable
from shared.bus import OPERATOR_USER
from shared.config import Settings

CLUSTER_NAME = "mediai-local"
SINGLE_SERVER_NAME = "mediai-local"


async def _ignore(error: Exception) -> None:
    """Connection errors while probing only mean "not ready yet"."""


def node_name(settings: Settings, node: int) -> str:
    """The part name of node ``node`` (from 1), also its NATS server name: ``nats`` alone, or
    ``nats-1``.. in a cluster (what JetStream reports as a stream's leader)."""
    return "nats" if settings.nats_nodes == 1 else f"nats-{node}"


def node_url(settings: Settings, node: int) -> str:
    client, _ = settings.nats_node_ports()[node - 1]
    return f"nats://{settings.host}:{client}"


def operator_login(settings: Settings) -> dict[str, str]:
    """The options of ``nats.connect`` that log the stack itself in, as the operator."""
    return {"user": OPERATOR_USER, "password": ensure_credentials(settings.data_dir)[OPERATOR_USER]}


def node_config(settings: Settings, node: int) -> str:
    """The server config of one node (NATS's own format; JSON strings are valid in it)."""
    client, route = settings.nats_node_ports()[node - 1]
    name = node_name(settings, node)
    store = (settings.data_dir / name).resolve()
    lines = [
        f'server_name: "{SINGLE_SERVER_NAME if settings.nats_nodes == 1 else name}"',
        f'listen: "{settings.host}:{client}"',
        "jetstream {",
        f'  store_dir: "{store}"',
        "  sync_interval: always",
        "}",
    ]
    if settings.nats_nodes > 1:
        routes = ", ".join(
            f'"nats-route://{settings.host}:{r}"' for _, r in settings.nats_node_ports()
        )
        lines += [
            "cluster {",
            f'  name: "{CLUSTER_NAME}"',
            f'  listen: "{settings.host}:{route}"',
            f"  routes: [{routes}]",
            "}",
        ]
    return "\n".join(lines) + "\n" + local_users_block(ensure_credentials(settings.data_dir))


def nats_part(settings: Settings, node: int = 1) -> Part:
    name = node_name(settings, node)
    url = node_url(settings, node)
    config_path = (settings.data_dir / f"{name}.conf").resolve()
    client, route = settings.nats_node_ports()[node - 1]
    ports = [("MEDIAI_NATS_PORT", client)]
    if settings.nats_nodes > 1:
        ports.append(("MEDIAI_NATS_CLUSTER_PORT", route))

    async def prepare() -> None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # The config holds the passwords: readable by this user alone, like the credentials.
        config_path.touch(mode=0o600)
        config_path.chmod(0o600)
        config_path.write_text(node_config(settings, node))

    async def ready() -> bool:
        nc = await nats.connect(
            url,
            **operator_login(settings),
            connect_timeout=1,
            max_reconnect_attempts=0,
            allow_reconnect=False,
            error_cb=_ignore,
        )
        try:
            js = nc.jetstream(timeout=1.5)
            await js.account_info()  # in a cluster: answered once there is a meta leader
            if settings.nats_nodes > 1:
                await _probe_replicated_stream(js, name, settings.nats_replicas)
            return True
        finally:
            await nc.close()

    return Part(
        name=name,
        argv=[executable("nats-server"), "-c", str(config_path)],
        url=url,
        ports=ports,
        ready=ready,
        prepare=prepare,
        ready_timeout=30.0 if settings.nats_nodes == 1 else 60.0,
    )


async def _probe_replicated_stream(js: nats.js.JetStreamContext, node: str, replicas: int) -> None:
    """A cluster node is ready when a stream with the stack's replicas can be created through
    it (every peer up and current), not merely when it answers."""
    stream = f"MEDIAI_READY_{node.replace('-', '_').upper()}"
    await js.add_stream(
        StreamConfig(
            name=stream,
            subjects=[f"mediai_ready.{node}"],
            storage=StorageType.MEMORY,
            num_replicas=replicas,
        )
    )
    with contextlib.suppress(Exception):
        await js.delete_stream(stream)


def nats_parts(settings: Settings) -> list[Part]:
    """The NATS servers of the stack, node 1 first."""
    return [nats_part(settings, node) for node in range(1, settings.nats_nodes + 1)]


async def stream_leader(settings: Settings, stream: str, timeout: float = 15.0) -> str:
    """The part name of the node leading ``stream`` (JetStream's stream info, cluster leader),
    waiting out an election in progress (no leader, or no answer) for up to ``timeout``."""
    if settings.nats_nodes == 1:
        return node_name(settings, 1)
    nc = await nats.connect(
        servers=settings.nats_url.split(","),
        **operator_login(settings),
        connect_timeout=2,
        error_cb=_ignore,
    )
    try:
        js = nc.jetstream(timeout=2)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(nats.errors.Error):
                info = await js.stream_info(stream)
                if info.cluster is not None and info.cluster.leader:
                    return info.cluster.leader
            if time.monotonic() > deadline:
                raise StackError(f"stream {stream} has had no leader for {timeout:.0f}s")
            await asyncio.sleep(0.2)
    finally:
        await nc.close()
