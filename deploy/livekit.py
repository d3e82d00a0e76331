"""The local LiveKit server: built once from the Go module proxy, run with a generated config."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from deploy.gotools import GoTool, GoToolUnavailableError, build
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


def write_config(settings: Settings, path: Path) -> Path:
    """The server's config: loopback only, our keys, webhooks to our gateway.

    Loopback needs ``node_ip`` 127.0.0.1, no external IP discovery and ICE limited to ``lo`` and
    the default route's interface (``ice_interfaces``), or peers take seconds to connect or time
    out (livekit/agents #2386, livekit/livekit #3990).
    """
    config = {
        "port": settings.livekit_port,
        "bind_addresses": [settings.host],
        "rtc": {
            "tcp_port": settings.livekit_rtc_tcp_port,
            "udp_port": settings.livekit_rtc_udp_port,
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
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
