"""The agent worker process: a livekit-agents AgentServer registered under an explicit agent name.

It checks each job before accepting it (metadata, role, provider credentials) so a job that
cannot run ends at once with a clear event instead of a half-configured agent; it keeps warm job
processes (Silero VAD already loaded) so an accepted job joins at once; and on SIGTERM it asks
its sessions to say goodbye, waits for them, then exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from livekit.agents import AgentServer, JobContext, JobExecutorType, JobProcess, JobRequest

from services.agent.leftovers import WorkerSpool
from services.agent.load import LoadReporter
from services.agent.metadata import JobMetadata, MetadataError, parse_metadata
from services.agent.metrics import register_spool_metrics
from services.agent.providers import (
    ProviderError,
    build_models,
    missing_credentials,
    openai_client,
)
from services.agent.reporter import Reporter
from services.agent.roles import Role, RoleError, load_registry, render_instructions
from services.agent.session import SessionRuntime, WorkerContext, auto_subscribe, open_journal
from services.agent.spool import spool_root
from services.agent.startup import WORKER_ID_VARIABLE, preload_modules, worker_id
from services.agent.tools import TOOLS
from services.agent.tracing import JobTrace, install_tracing
from shared.bus import Bus, BusUnavailableError, connect_bus
from shared.config import Settings, load_settings
from shared.events import Event
from shared.events.agents import (
    AgentEndRequested,
    AgentSessionFailed,
    AgentWorkerRegistered,
)
from shared.keys import DispatchKeys
from shared.keys_api import KeyRequestError
from shared.naming import SYSTEM_TENANT
from shared.participants import ROLE_ATTRIBUTE
from shared.phi import KeysUnavailableError, Phi, is_erased

log = logging.getLogger("mediai.agent")

_PR_SET_PDEATHSIG = 1
# How often the worker looks for leftovers in the spool (so how soon after NATS is back, or after
# a job died, they are published); a round is a folder listing while there is nothing to do.
SPOOL_FLUSH_SECONDS = 1.0
FINAL_FLUSH_SECONDS = 2.0


class WorkerStartError(Exception):
    """The worker cannot start; the message is one line."""


def check_roles(roles: dict[str, Role]) -> None:
    for role in roles.values():
        unknown = [name for name in role.tools if name not in TOOLS]
        if unknown:
            raise WorkerStartError(f"role {role.name!r}: unknown tools {unknown}")


def check_job(meta: JobMetadata, roles: dict[str, Role], settings: Settings) -> Role:
    """The role of a job that can run; ProviderError/RoleError/MetadataError otherwise."""
    role = roles.get(meta.request.role)
    if role is None:
        raise RoleError(f"unknown role {meta.request.role!r} (this worker has {sorted(roles)})")
    render_instructions(
        role,
        language=meta.request.language,
        instructions=meta.request.instructions,
        mode=meta.request.instructions_mode,
    )
    missing = missing_credentials(settings)
    for provider in meta.providers:
        if provider in missing:
            raise ProviderError("missing_credentials", f"provider {provider}: {missing[provider]}")
    return role


def failure_reason(error: Exception) -> str:
    if isinstance(error, ProviderError):
        return error.reason
    if isinstance(error, RoleError):
        return "unknown_role" if "unknown role" in str(error) else "invalid_metadata"
    return "invalid_metadata"


def agent_identity(meta: JobMetadata) -> str:
    # Readable in a room's participant list, and unique per dispatch (a UUIDv7's tail).
    return f"agent-{meta.request.role}-{meta.dispatch_id.replace('-', '')[-12:]}"


# -- in the job processes ------------------------------------------------------------------


def prewarm(proc: JobProcess) -> None:
    """Runs once per job process, before it is given a job: everything slow happens here."""
    # A job process must not outlive its worker: the pool counts a killed worker's sessions as
    # lost, and an orphan would keep talking in the room with nobody reporting for it.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    # Built in the forkserver (its preload): shared by the job processes, not one per process.
    from services.agent.preload import VAD

    settings = load_settings()
    install_tracing(settings)
    proc.userdata["mediai"] = WorkerContext(
        settings=settings,
        roles=load_registry(),
        vad=VAD,
        worker_id=worker_id(),
        openai_client=openai_client(settings),
    )


def traceparent_of(raw: str) -> str | None:
    """The dispatch's trace context in a job's metadata (None when it cannot be read)."""
    try:
        return parse_metadata(raw).traceparent
    except MetadataError:
        return None


async def entrypoint(ctx: JobContext) -> None:
    deps: WorkerContext = ctx.proc.userdata["mediai"]
    job_trace = JobTrace.start(ctx, traceparent_of(ctx.job.metadata))
    with job_trace.current():
        await run_job(ctx, deps, job_trace)


async def run_job(ctx: JobContext, deps: WorkerContext, job_trace: JobTrace) -> None:
    bus_connecting = asyncio.create_task(connect_bus(deps.settings, "agent", streams="skip"))
    try:
        meta = parse_metadata(ctx.job.metadata)
        role = check_job(meta, deps.roles, deps.settings)
        models = build_models(meta, deps.settings, speaks=role.speaks, client=deps.openai_client)
    except (MetadataError, RoleError, ProviderError) as error:
        # on_request rejects these before accepting; this is the second line of defence.
        event, tenant, key = failure_event(ctx.job.metadata, error, deps.worker_id)
        log.error("job refused: %s", error)
        await report_once(await bus_connecting, deps, event, tenant=tenant, key=key)
        ctx.shutdown(failure_reason(error))
        await job_trace.end(failure_reason(error))
        return
    job_trace.describe(dispatch_id=meta.dispatch_id, role=role.name)
    try:
        await ctx.connect(auto_subscribe=auto_subscribe(role, deps.settings))  # while bus connects
    except Exception as error:  # noqa: BLE001 - any failure to join is reported, then the job ends
        log.error("could not join the room: %s", type(error).__name__)
        failed = AgentSessionFailed(
            dispatch_id=meta.dispatch_id,
            room=meta.request.room,
            role=role.name,
            reason="start_failed",
            detail=f"could not join the room: {type(error).__name__}",
            worker_id=deps.worker_id,
            failed_at=datetime.now(UTC),
        )
        bus = await bus_connecting
        await report_once(bus, deps, failed, tenant=meta.tenant, key=meta.dispatch_id)
        ctx.shutdown("start_failed")
        await job_trace.end("start_failed")
        return
    bus = await bus_connecting
    try:
        meta = await open_with_dispatch_keys(bus, meta)
    except (KeysUnavailableError, KeyRequestError, MetadataError) as error:
        log.error("the dispatch's keys are unavailable: %s", error)
        failed = AgentSessionFailed(
            dispatch_id=meta.dispatch_id,
            room=meta.request.room,
            role=role.name,
            reason="keys_unavailable",
            detail=str(error),
            worker_id=deps.worker_id,
            failed_at=datetime.now(UTC),
        )
        await report_once(bus, deps, failed, tenant=meta.tenant, key=meta.dispatch_id)
        ctx.shutdown("keys_unavailable")
        await job_trace.end("keys_unavailable")
        return
    runtime = SessionRuntime(ctx, meta, role, deps, models, bus, job_trace)
    try:
        await runtime.start()
    except Exception as error:
        log.exception("session failed to start")
        await runtime.reporter.publish(
            AgentSessionFailed(
                dispatch_id=meta.dispatch_id,
                room=meta.request.room,
                role=role.name,
                reason="start_failed",
                detail=type(error).__name__,
                worker_id=deps.worker_id,
                failed_at=datetime.now(UTC),
            )
        )
        runtime.end = ("error", f"start failed: {type(error).__name__}")
        ctx.shutdown("start_failed")
        await job_trace.end("start_failed")


async def open_with_dispatch_keys(bus: Bus, meta: JobMetadata) -> JobMetadata:
    """Give the job's bus its dispatch's keys (asked for by dispatch id: the key service answers
    only while the dispatch is live) and open the dispatch's sealed instructions with them.
    From here on the job seals what it publishes with its patient's keys, and only those."""
    keys = await DispatchKeys.fetch(bus.nc, tenant=meta.tenant, dispatch_id=meta.dispatch_id)
    bus.phi = Phi(keys)
    request = await bus.phi.open_data(meta.request, tenant=meta.tenant)
    if is_erased(request.instructions):
        raise MetadataError("the dispatch's instructions were erased (their key was destroyed)")
    return replace(meta, request=request)


async def report_once(
    bus: Bus, deps: WorkerContext, event: Event, *, tenant: str, key: str
) -> None:
    """The one event of a job that could not start, spooled like a session's, then the job's
    connection closed."""
    reporter = Reporter(bus, open_journal(deps, key), tenant=tenant, key=key)
    reporter.emit(event)
    await reporter.close()
    await bus.close()


def failure_event(raw: str, error: Exception, worker: str) -> tuple[AgentSessionFailed, str, str]:
    """The AgentSessionFailed of a job that could not start, with its tenant and key, even
    for unreadable metadata."""
    try:
        meta: JobMetadata | None = parse_metadata(raw)
    except MetadataError:
        meta = None
    event = AgentSessionFailed(
        dispatch_id=meta.dispatch_id if meta else "unknown",
        room=meta.request.room if meta else "",
        role=meta.request.role if meta else "",
        reason=failure_reason(error),
        detail=str(error),
        worker_id=worker,
        failed_at=datetime.now(UTC),
    )
    return event, meta.tenant if meta else SYSTEM_TENANT, meta.dispatch_id if meta else "unknown"


async def publish_failure(bus: Bus, raw: str, error: Exception, worker: str) -> None:
    """Publish a job's failure from the worker's main process (it refused the job)."""
    event, tenant, key = failure_event(raw, error, worker)
    log.error("job refused: %s", error)
    await bus.publish(event, tenant=tenant, key=key)


# -- in the worker's main process -----------------------------------------------------------


class Worker:
    """One AgentServer and what its main process does around it."""

    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        roles: dict[str, Role],
        spool: WorkerSpool,
        http_port: int = 0,
        prometheus_port: int | None = None,
    ) -> None:
        self.settings, self.bus, self.roles, self.spool = settings, bus, roles, spool
        self.id = worker_id()
        self.accepting = 0
        per_worker = settings.agent_jobs_per_worker
        self.server = AgentServer(
            ws_url=settings.livekit_url,
            api_key=settings.livekit_api_key,
            api_secret=settings.livekit_api_secret,
            job_executor_type=JobExecutorType.PROCESS,
            # Capacity is counted in jobs (see on_request): LiveKit's CPU-based default marks a
            # busy machine's workers full and drops dispatches (livekit/agents #717, #4818).
            load_fnc=lambda server: min(1.0, len(server.active_jobs) / per_worker),
            load_threshold=float("inf"),
            num_idle_processes=settings.agent_idle_processes,
            initialize_process_timeout=30.0,
            shutdown_process_timeout=10.0,
            drain_timeout=settings.agent_drain_timeout,
            setup_fnc=prewarm,
            preload_modules=preload_modules(settings),
            host=settings.host,
            port=http_port,
            prometheus_port=prometheus_port,
        )
        self.server.rtc_session(
            entrypoint, agent_name=settings.agent_name, on_request=self.on_request
        )
        self.server.on("worker_registered", self._on_registered)
        self._background: set[asyncio.Task[Any]] = set()
        self.load = LoadReporter(
            bus, self.id, per_worker, lambda: len(self.server.active_jobs) + self.accepting
        )

    async def on_request(self, request: JobRequest) -> None:
        try:
            meta = parse_metadata(request.job.metadata)
            check_job(meta, self.roles, self.settings)
        except (MetadataError, RoleError, ProviderError) as error:
            await publish_failure(self.bus, request.job.metadata, error, self.id)
            # terminate: no other worker should try a job that cannot run anywhere.
            await request.reject(terminate=True)
            return
        if len(self.server.active_jobs) + self.accepting >= self.settings.agent_jobs_per_worker:
            await request.reject(terminate=False)  # full: LiveKit offers it to another worker
            return
        self.accepting += 1
        try:
            await request.accept(
                identity=agent_identity(meta),
                name=meta.request.role,
                # Its role ("copilot"…) is what frontends check, with its kind (agent), before
                # they trust a message from it (shared/participants.py).
                attributes={
                    ROLE_ATTRIBUTE: meta.request.role,
                    "mediai.dispatch_id": meta.dispatch_id,
                },
            )
        finally:
            self.accepting -= 1

    def _on_registered(self, livekit_worker_id: str, server_info: Any) -> None:
        event = AgentWorkerRegistered(
            worker_id=self.id,
            livekit_worker_id=livekit_worker_id,
            pid=os.getpid(),
            agent_name=self.settings.agent_name,
            roles=sorted(self.roles),
            providers_missing=missing_credentials(self.settings),
            registered_at=datetime.now(UTC),
        )
        task = asyncio.create_task(self._announce(event))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _announce(self, registered: AgentWorkerRegistered) -> None:
        # The load first: once the pool hears "registered" a dispatch may come, and the
        # dispatcher counts only the workers whose load it knows.
        self.load.registered = True
        await self.load.report()
        await self.bus.publish(registered, tenant=SYSTEM_TENANT, key=self.id)

    async def drain(self) -> None:
        """Ask every session to end (goodbye, final usage), wait for them, then close."""
        self.load.available = False  # the dispatcher stops counting this worker's free slots
        await self.load.report()
        for info in self.server.active_jobs:
            try:
                meta = parse_metadata(info.job.metadata)
            except MetadataError:
                continue
            await self.bus.publish(
                AgentEndRequested(
                    dispatch_id=meta.dispatch_id,
                    room=meta.request.room,
                    requested_by="worker_draining",
                    requested_at=datetime.now(UTC),
                ),
                tenant=meta.tenant,
                key=meta.dispatch_id,
            )
        try:
            await self.server.drain(timeout=self.settings.agent_drain_timeout)
        except TimeoutError:
            log.warning(
                "drain: sessions still running after %ss; closing them",
                self.settings.agent_drain_timeout,
            )
        await self.server.aclose()
        if self.bus.nc.is_connected:  # jobs closed at the deadline may have left events
            with contextlib.suppress(TimeoutError, BusUnavailableError, OSError):
                await asyncio.wait_for(self.spool.flush(self.bus), FINAL_FLUSH_SECONDS)


async def run_worker(
    settings: Settings, *, http_port: int = 0, prometheus_port: int | None = None
) -> None:
    """Run one worker until SIGTERM/SIGINT, then drain. WorkerStartError for a bad setup."""
    try:
        roles = load_registry()
    except RoleError as error:
        raise WorkerStartError(str(error)) from None
    check_roles(roles)
    for provider, problem in missing_credentials(settings).items():
        log.warning(
            "agent worker: provider %s unavailable: %s; jobs asking for it fail", provider, problem
        )
    # Fixed now, so the job processes (started later, with this environment) name this worker,
    # not their own pid, in their events and spool folder.
    os.environ[WORKER_ID_VARIABLE] = worker_id()
    try:
        spool = WorkerSpool(spool_root(settings.data_dir), worker_id())
    except OSError as error:
        raise WorkerStartError(f"agent spool: {error}") from None
    register_spool_metrics(spool)
    bus = await connect_bus(settings, "agent", streams="skip")
    worker = Worker(settings, bus, roles, spool, http_port, prometheus_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    flushing = asyncio.create_task(
        spool.flush_forever(bus, SPOOL_FLUSH_SECONDS), name="mediai-spool"
    )
    running = asyncio.create_task(worker.server.run(devmode=False))
    reporting = asyncio.create_task(worker.load.run(), name="mediai-load")
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if running.done():
            running.result()  # the server failed (e.g. LiveKit unreachable): raise it
            return
        log.info("agent worker %s draining", worker.id)
        flushing.cancel()
        await worker.drain()
        await running
    finally:
        stopping.cancel()
        flushing.cancel()
        reporting.cancel()
        await bus.close()
        spool.close()
