"""Container healthcheck of the MediAI image: probe whatever process this container runs.

One image runs every service, so the probe works out the port from the container's own command
(PID 1 is `tini -- mediai serve <name>` or `tini -- mediai agent-worker`) and the same
environment variables the process reads:

- ``mediai serve <name>``  ->  GET http://127.0.0.1:$MEDIAI_<NAME>_PORT/healthz
- ``mediai agent-worker``  ->  GET http://127.0.0.1:$MEDIAI_AGENT_HEALTH_PORT/  (livekit-agents
  serves its health check at ``/``: 200 when connected to LiveKit, 503 when not)
- anything else (``mediai migrate``, a shell)  ->  healthy: there is nothing to probe.

``MEDIAI_HEALTHCHECK_URL`` overrides all of that. Only the standard library is used, and the
process exits 0 (healthy) or 1 (unhealthy) as Docker's HEALTHCHECK expects. Kubernetes ignores
HEALTHCHECK; it uses the probes described in docs/deployment.md, on the same endpoints.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

# The services' default ports (the contract of `mediai serve`); MEDIAI_<NAME>_PORT overrides.
DEFAULT_PORTS = {
    "token": 8101,
    "rooms": 8102,
    "webhooks": 8103,
    "dispatcher": 8104,
    "billing": 8105,
    "scheduling": 8106,
    "keys": 8107,
    "recorder": 8108,
    "pool": 8109,
    "sessions": 8110,
}
DEFAULT_AGENT_HEALTH_PORT = 8081
TIMEOUT_SECONDS = 3.0


def command_line() -> list[str]:
    """The arguments of PID 1, the container's main process (tini and what it runs)."""
    try:
        with open("/proc/1/cmdline", "rb") as file:
            raw = file.read()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def probe_url() -> str | None:
    """The URL to probe, or None when this container runs no server."""
    explicit = os.environ.get("MEDIAI_HEALTHCHECK_URL", "").strip()
    if explicit:
        return explicit
    args = command_line()
    if "agent-worker" in args:
        port = os.environ.get("MEDIAI_AGENT_HEALTH_PORT") or DEFAULT_AGENT_HEALTH_PORT
        return f"http://127.0.0.1:{port}/"
    if "serve" in args:
        index = args.index("serve")
        name = args[index + 1] if index + 1 < len(args) else ""
        if name in DEFAULT_PORTS:
            port = os.environ.get(f"MEDIAI_{name.upper()}_PORT") or DEFAULT_PORTS[name]
            return f"http://127.0.0.1:{port}/healthz"
    return None


def main() -> int:
    url = probe_url()
    if url is None:
        return 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            healthy = 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError) as error:
        print(f"unhealthy: {url}: {error}", file=sys.stderr)
        return 1
    if not healthy:
        print(f"unhealthy: {url}: HTTP {response.status}", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
