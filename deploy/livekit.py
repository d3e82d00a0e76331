"""The local LiveKit server: built once from the Go module proxy, run with a generated config,
one node or several sharing a Redis behind a balancer (deploy/cluster.py)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import yaml

from deploy.cluster import livekit_balancer_part, node_name
from deploy.gotools import GoTool, GoToolUnavailableError, build
from deploy.supervisor import Part, StackError, http_ready
from shared.config import Settings

# The one place the LiveKit server version is pinned.
LIVEKIT_SERVER_MODULE = "github.com/livekit/livekit-server/cmd/server"
LIVEKIT_SERVER_VERSION = "v1.13.5"


class LiveKitUnavailableError(Exception):
    """No way to get a LiveKit server here; the message says how to fix it, in one line."""


LIVEKIT_SERVER = GoTool(
    "LiveKit server", LIVEKIT_SERVER_MODULE, LIVEKIT_SERVER_VERSION, "livekit-server"
)


def binary_path() -> Path:
    return LIVEKIT_SERVER.path


def ensure_binary(announce: bool = True) -> Path:
    """The LiveKit server binary, building it with ``go install`` on first use."""
    if shutil.which("go") is None and not binary_path().is_file():
        raise LiveKitUnavailableError(
            "LiveKit server: Go is not installed and LIVEKIT_URL is not set; install Go 1.23+ "
            "(https://go.dev/dl) or set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET"
        )
    try:
        return build(LIVEKIT_SERVER, announce=announce)
    except GoToolUnavailableError as error:
        raise LiveKitUnavailableError(str(error)) from None


def ice_interfaces() -> list[str]:
    """Loopback plus the interfaces of the default route.

    WebRTC clients built on libwebrtc (the ``livekit`` rtc SDK, livekit-agents, browsers) never
    offer loopback candidates, so a server whose ICE is limited to ``lo`` is unreachable for
    them (``wait_pc_connection timed out``); the default route's interface is the one their
    host candidates come from. Other interfaces (container bridges) stay out.
    """
    names = ["lo"]
    try:
        routes = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return names
    for line in routes:
        fields = line.split()
        if len(fields) > 1 and fields[1] == "00000000" and fields[0] not in names:
            names.append(fields[0])
    return names


def write_config(settings: Settings, path: Path, node: int = 1) -> Path:
    """The config of LiveKit node ``node`` (from 1): loopback only, our keys, webhooks to our
    gateway and, in a cluster (``livekit_nodes`` > 1), the Redis through which the nodes share
    rooms and route signalling and agent jobs to the node hosting a room.

    Loopback needs ``node_ip`` 127.0.0.1, no external IP discovery and ICE limited to ``lo`` and
    the default route's interface (``ice_interfaces``), or peers take seconds to connect or time
    out (livekit/agents #2386, livekit/livekit #3990).
    """
    signal, rtc_tcp, rtc_udp = settings.livekit_node_ports()[node - 1]
    config: dict[str, object] = {
        "port": signal,
        "bind_addresses": [settings.host],
        "rtc": {
            "tcp_port": rtc_tcp,
            "udp_port": rtc_udp,
            "use_external_ip": False,
            "node_ip": settings.host,
            "interfaces": {"includes": ice_interfaces()},
        },
        "keys": {settings.livekit_api_key: settings.livekit_api_secret},
        "webhook": {
            "api_key": settings.livekit_api_key,
            "urls": [f"{settings.gateway_url}/v1/webhooks/livekit"],
        },
        "logging": {"level": "info", "json": False},
    }
    if settings.livekit_nodes > 1:
        config["redis"] = {"address": f"{settings.host}:{settings.redis_port}"}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def livekit_part(settings: Settings, node: int = 1) -> Part:
    """LiveKit node ``node`` (from 1): ``livekit`` alone, ``livekit-1``.. in a cluster, each with
    its own ports and config (deploy/livekit.py)."""
    name = node_name("livekit", node, settings.livekit_nodes)
    config_path = (settings.data_dir / f"{name}.yaml").resolve()
    binary = binary_path()
    signal_port, rtc_tcp, rtc_udp = settings.livekit_node_ports()[node - 1]

    async def prepare() -> None:
        try:
            await asyncio.to_thread(ensure_binary)
        except LiveKitUnavailableError as error:
            raise StackError(str(error)) from None
        write_config(settings, config_path, node)

    http_url = f"http://{settings.host}:{signal_port}/"
    return Part(
        name=name,
        argv=[str(binary), "--config", str(config_path), "--node-ip", settings.host],
        url=f"ws://{settings.host}:{signal_port}",
        ports=[
            ("MEDIAI_LIVEKIT_PORT", signal_port),
            ("MEDIAI_LIVEKIT_RTC_TCP_PORT", rtc_tcp),
            ("MEDIAI_LIVEKIT_RTC_UDP_PORT", rtc_udp),
        ],
        ready=lambda: http_ready(http_url),
        prepare=prepare,
    )


def livekit_parts(settings: Settings) -> list[Part]:
    """The LiveKit nodes and, in a cluster, the balancer in front of them (deploy/cluster.py)."""
    nodes = [livekit_part(settings, n) for n in range(1, settings.livekit_nodes + 1)]
    if settings.livekit_nodes == 1:
        return nodes
    through = f"http://{settings.host}:{settings.livekit_port}/"
    return [*nodes, livekit_balancer_part(settings, lambda: http_ready(through))]
