"""The ``mediai`` command: run the local stack, serve one service, and operator tasks."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import click
import msgspec

from shared.config import ConfigError, Settings, load_settings

T = TypeVar("T")


def fail(message: str, code: int = 1) -> NoReturn:
    """One clear line on stderr, no traceback."""
    click.echo(f"mediai: {message}", err=True)
    sys.exit(code)


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as error:
        fail(f"configuration: {error}", code=2)


def run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(main())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """MediAI: AI agents in real-time medical consultations."""


@cli.command()
@click.option(
    "--cluster",
    is_flag=True,
    help="Run the cluster topology: 3 NATS nodes (R3 streams), 2 LiveKit nodes on Redis, 2 "
    "replicas of every service, 2 agent worker pools (docs/scaling.md).",
)
def up(cluster: bool) -> None:
    """Start the whole stack on this machine (data under MEDIAI_DATA_DIR, default .mediai/)."""
    from deploy.cluster import TOPOLOGY
    from deploy.stack import Stack
    from deploy.supervisor import StackError

    if cluster:
        # The topology's counts, unless the environment gives its own.
        for name, count in TOPOLOGY.items():
            os.environ.setdefault(f"MEDIAI_{name.upper()}", str(count))
    settings = settings_or_exit()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock = (settings.data_dir / ".lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fail(f"a stack is already running on {settings.data_dir} (see 'mediai status')")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        stack = Stack(settings, services=list(settings.services) or None)
        click.echo(f"starting the MediAI stack in {settings.data_dir.resolve()} ...")
        start = asyncio.create_task(stack.start())
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({start, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if start in done and start.exception() is None:
            state = start.result()
            traces = f"  traces       {state.traces_url}\n" if state.traces_url else ""
            click.echo(
                "\nMediAI is ready.\n"
                f"  gateway      {state.gateway_url}\n"
                # The key rides in the fragment, which never reaches a server; the console
                # exchanges it for a one-hour view token and drops it (docs/console.md).
                f"  console      {state.gateway_url}/#k={state.dev_api_key}\n"
                f"  LiveKit      {state.livekit_url}"
                f"{' (local dev server)' if state.livekit_local else ''}\n"
                f"  NATS         {state.nats_url}\n"
                f"  Postgres     {state.database_url}\n"
                f"{traces}"
                f"  dev API key  {state.dev_api_key}\n"
                f"  logs         {settings.data_dir / 'logs'}\n"
                "\nTry:  curl -s -X POST "
                f"{state.gateway_url}/v1/tokens -H 'Authorization: Bearer {state.dev_api_key}' "
                '-H \'Content-Type: application/json\' -d \'{"room":"demo","identity":"patient-1"}\'\n'
                "Ctrl-C stops everything.",
            )
            warning = provider_warning(settings)
            if warning:
                click.echo(f"\nmediai: {warning}", err=True)
            watcher = asyncio.create_task(
                stack.supervisor.report_exits(lambda line: click.echo(f"mediai: {line}", err=True))
            )
            await waiter
            watcher.cancel()
        else:
            waiter.cancel()
            if not start.done():
                start.cancel()  # Ctrl-C while starting: the stack stops what it started
                with contextlib.suppress(asyncio.CancelledError):
                    await start
            error = None if start.cancelled() else start.exception()
            if error is not None and not isinstance(error, StackError):
                raise error
            if error is not None:
                fail(str(error))
        click.echo("stopping ...")
        await stack.stop()
        click.echo("stopped.")

    run(main)


def provider_warning(settings: Settings) -> str | None:
    """One line when the agents' default models cannot run: without it the stack is ready but
    every dispatch fails in its worker, which only the worker's log would say."""
    from services.agent.providers import missing_credentials

    missing = missing_credentials(settings)
    defaults = {
        m.partition("/")[0] for m in (settings.agent_stt, settings.agent_llm, settings.agent_tts)
    }
    lacking = sorted(defaults & set(missing))
    if not lacking:
        return None
    return (
        f"agents cannot answer yet: their default models use {', '.join(lacking)} but "
        f"{'; '.join(missing[p] for p in lacking)}. Set GOOGLE_API_KEY for Gemini, or "
        "OPENAI_API_KEY (with OPENAI_BASE_URL for an on-premises server) and "
        "MEDIAI_AGENT_STT/LLM/TTS=openai/<model>, then start again."
    )


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for scripts.")
def status(as_json: bool) -> None:
    """Show each part of the local stack: state, URL and pid."""
    from deploy.stack import read_state

    settings = settings_or_exit()
    state = read_state(settings.data_dir)
    if state is None or not _alive(state.supervisor_pid):
        if as_json:
            click.echo(msgspec.json.encode({"running": False, "data_dir": str(settings.data_dir)}))
        else:
            click.echo(f"no stack is running on {settings.data_dir} (start it with 'make up')")
        sys.exit(3)
    parts = [
        {
            "name": p.name,
            "state": "running" if p.pid and _alive(p.pid) else "stopped",
            "url": p.url,
            "pid": p.pid,
            "log": p.log,
        }
        for p in state.parts
    ]
    if as_json:
        document = {
            "running": True,
            "data_dir": str(settings.data_dir),
            "gateway_url": state.gateway_url,
            "nats_url": state.nats_url,
            "database_url": state.database_url,
            "livekit": {
                "url": state.livekit_url,
                "api_key": state.livekit_api_key,
                "api_secret": state.livekit_api_secret,
                "local": state.livekit_local,
            },
            "dev_api_key": state.dev_api_key,
            "traces_url": state.traces_url,
            "trace_url_template": state.trace_url_template,
            "supervisor_pid": state.supervisor_pid,
            "parts": parts,
        }
        click.echo(msgspec.json.encode(document))
        return
    click.echo(f"{'part':<14} {'state':<8} {'pid':>7}  url")
    for p in parts:
        click.echo(f"{p['name']:<14} {p['state']:<8} {p['pid'] or '-':>7}  {p['url']}")
    click.echo(f"\ndev API key: {state.dev_api_key}")
    if state.traces_url:
        click.echo(f"traces:      {state.traces_url} (one trace: {state.trace_url_template})")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# How long a service keeps an idle connection open: longer than the gateways keep theirs to it
# (`keepalive 60s` in deploy/Caddyfile and deploy/production/Caddyfile), so the gateway always
# closes first. With uvicorn's default of 5 s, a request the gateway sent on a connection the
# service was closing that instant got no answer: a 502 through the gateway, not retried for a
# POST.
KEEP_ALIVE_SECONDS = 75


@cli.command()
@click.argument("service")
def serve(service: str) -> None:
    """Run one HTTP service (token, rooms, ...) in this process."""
    import uvicorn

    from services import http_services

    if service not in http_services():
        fail(f"unknown service {service!r}; one of: {', '.join(http_services())}", code=2)
    settings = settings_or_exit()
    try:
        app = importlib.import_module(f"services.{service}.app").create_app(settings)
    except ConfigError as error:
        fail(f"configuration: {error}", code=2)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.service_port(service),
        log_level=settings.log_level.lower(),
        # uvloop and httptools: about a third more requests per CPU second than asyncio's
        # loop with the h11 parser (docs/performance.md).
        loop="uvloop",
        http="httptools",
        access_log=False,  # request lines are traced; logging them could leak identities
        timeout_graceful_shutdown=5,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )


@cli.command()
def migrate() -> None:
    """Apply pending database migrations (idempotent)."""
    from shared.db import migrate as apply

    settings = settings_or_exit()
    try:
        applied = run(lambda: apply(settings))
    except OSError as error:
        fail(f"cannot reach Postgres at DATABASE_URL: {error}")
    click.echo("\n".join(applied) if applied else "database is up to date")


@cli.group()
def tenants() -> None:
    """Manage tenants (clinics) and their API keys."""


@tenants.command("create")
@click.argument("name")
def tenants_create(name: str) -> None:
    """Create a tenant and print its API key (shown only this once)."""
    from shared.db import create_pool
    from shared.tenants import create_tenant

    settings = settings_or_exit()

    async def main() -> tuple[str, str]:
        pool = await create_pool(settings, max_size=2)
        try:
            async with pool.acquire() as conn:
                tenant, key = await create_tenant(conn, name)
            await publish_platform_events(settings, pool)
            return tenant.id, key
        finally:
            await pool.close()

    try:
        tenant_id, key = run(main)
    except ValueError as error:
        fail(str(error), code=2)
    except OSError as error:
        fail(f"cannot reach Postgres at DATABASE_URL: {error}")
    click.echo(f"tenant {tenant_id} created; its API key (shown only now):\n{key}")


async def publish_platform_events(settings: Settings, pool: Any) -> int | None:
    """Publish the platform's pending events (tenants, API keys: written to the outbox by an
    operator command, and no service may publish them). NATS away: one line saying they wait
    for the next `mediai streams apply` (every deployment runs it) or `mediai up`."""
    from shared.bus import connect_bus
    from shared.outbox import relay_outbox

    # One line below, not a traceback or a warning per connection attempt.
    for noisy in ("nats", "shared.bus"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    try:
        bus = await asyncio.wait_for(connect_bus(settings, "platform", streams="skip"), timeout=3)
        try:
            return await relay_outbox(pool, bus)
        finally:
            await bus.close()
    except Exception as error:  # noqa: BLE001 - whatever it was, the rows wait and we say so
        click.echo(
            f"note: the platform's events are not published yet ({type(error).__name__}: NATS "
            "unreachable?); the next `mediai streams apply` or `mediai up` publishes them",
            err=True,
        )
        return None


@tenants.command("revoke-key")
@click.argument("key")
def tenants_revoke_key(key: str) -> None:
    """Revoke an API key, named by its first 11 characters (mk_ and 8) or whole.

    Every service stops accepting it within seconds (the ApiKeyRevoked event)."""
    from shared.db import create_pool
    from shared.tenants import revoke_api_key

    settings = settings_or_exit()

    async def main() -> tuple[str, str]:
        pool = await create_pool(settings, max_size=2)
        try:
            async with pool.acquire() as conn:
                revoked = await revoke_api_key(conn, key)
            await publish_platform_events(settings, pool)
            return revoked
        finally:
            await pool.close()

    try:
        tenant_id, prefix = run(main)
    except ValueError as error:
        fail(str(error), code=2)
    except OSError as error:
        fail(f"cannot reach Postgres at DATABASE_URL: {error}")
    click.echo(f"API key {prefix}… of tenant {tenant_id} revoked")


@cli.group()
def livekit() -> None:
    """The local LiveKit server."""


@cli.group()
def zipkin() -> None:
    """The local tracing backend (Zipkin)."""


@zipkin.command("fetch")
def zipkin_fetch() -> None:
    """Fetch the pinned Zipkin server jar into the cache (once; later calls return at once)."""
    from deploy import zipkin as zk

    try:
        path = zk.ensure_jar()
    except zk.ZipkinUnavailableError as error:
        fail(str(error))
    click.echo(str(path))


@livekit.command("build")
def livekit_build() -> None:
    """Build the pinned LiveKit server into the cache (once; later calls return at once)."""
    from deploy import livekit as lk

    try:
        path = lk.ensure_binary()
    except lk.LiveKitUnavailableError as error:
        fail(str(error))
    click.echo(str(path))


@cli.group()
def tools() -> None:
    """Programs the checks need, built once from the Go module proxy into the cache."""


@tools.command("build")
@click.argument("name", type=click.Choice(["helm", "oasdiff"]))
def tools_build(name: str) -> None:
    """Build a tool into the cache (once; later calls return at once) and print its path."""
    from deploy import gotools

    try:
        path = gotools.build(gotools.TOOLS[name])
    except gotools.GoToolUnavailableError as error:
        fail(str(error))
    click.echo(str(path))


def main() -> None:
    from deploy import operations

    operations.register(cli)
    cli()
