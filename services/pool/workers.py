"""The agent worker pool: the pool service (one per worker host) runs ``mediai agent-worker``
processes (as ``python -m services.agent``), between a minimum and a maximum, adds one when
every worker reports load above a threshold, restarts one that dies (with backoff, and an event
each time), and drains them all on shutdown.

An orchestrator can do the same job instead (MEDIAI_AGENT_POOL_MAX=0 turns this off; see
docs/agents.md for a Kubernetes Deployment with the same environment).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
from nats.js.api import ConsumerConfig, DeliverPolicy

from services.pool import core
from shared import metrics, subjects
from shared.background import TaskHealth
from shared.bus import Bus
from shared.config import Settings, to_environ
from shared.events import CODEC, Event
from shared.events.agents import (
    AgentWorkerExited,
    AgentWorkerRegistered,
    AgentWorkerStarted,
)
from shared.naming import SYSTEM_TENANT
from shared.outbox import add_to_outbox

log = logging.getLogger(__name__)
TICK_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # A worker never outlives the pool that supervises it.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class PoolWorker:
    worker_id: str
    process: asyncio.subprocess.Process
    http_port: int
    started: float
    attempt: int
    registered: bool = False
    load: float | None = None
    active_jobs: int = 0
    idle_since: float = field(default_factory=time.monotonic)
    stopping: bool = False

    def view(self, now: float) -> core.WorkerView:
        return core.WorkerView(
            worker_id=self.worker_id,
            registered=self.registered,
            load=self.load,
            active_jobs=self.active_jobs,
            idle_seconds=now - self.idle_since,
            stopping=self.stopping,
        )


class WorkerPool:
    """The pool of one worker host; ``run(bus)`` keeps it going until cancelled."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bus: Bus | None = None
        self.db: asyncpg.Pool | None = None
        self.workers: dict[str, PoolWorker] = {}
        self._restarts: list[tuple[float, int]] = []  # (due, attempt)
        self._monitors: set[asyncio.Task[None]] = set()
        self._registered = asyncio.Event()
        self.health = TaskHealth.current()
        self._stopping = False

    @property
    def enabled(self) -> bool:
        return self.settings.agent_pool_max > 0

    async def wait_ready(self, within: float) -> bool:
        """Wait until at least one worker is registered with LiveKit (False after ``within``)."""
        if not self.enabled:
            return True
        try:
            await asyncio.wait_for(self._registered.wait(), max(within, 0.0))
        except TimeoutError:
            return False
        return True

    async def run(self, bus: Bus, db: asyncpg.Pool) -> None:
        """Keep the pool at its size until cancelled (the service stopping), then drain every
        worker. If this loop fails it can simply be run again: the workers, and the tasks
        watching them, carry on meanwhile. Its events go through ``db``'s outbox."""
        if not self.enabled:
            await asyncio.Event().wait()  # nothing to run; stay up like the other loops
        self.bus, self.db = bus, db
        self.health = TaskHealth.current()
        self._update_registered()
        subscription = await bus.js.subscribe(
            subjects.type_filter(AgentWorkerRegistered, SYSTEM_TENANT),
            stream=subjects.stream_name(AgentWorkerRegistered.STREAM),
            cb=self._on_registered,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
        )
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.0)) as http:
                while True:
                    await self._poll_loads(http)
                    await self._tick()
                    await asyncio.sleep(TICK_SECONDS)
        except asyncio.CancelledError:
            await self.drain()
            raise
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _tick(self) -> None:
        now = time.monotonic()
        due = [r for r in self._restarts if r[0] <= now]
        self._restarts = [r for r in self._restarts if r[0] > now]
        for _, attempt in due:
            await self.start_worker("restart", attempt)
        decision = core.plan(
            [w.view(now) for w in self.workers.values()],
            minimum=self.settings.agent_pool_min,
            maximum=self.settings.agent_pool_max,
            scale_up_load=self.settings.agent_scale_up_load,
            restarting=len(self._restarts),
        )
        for _ in range(decision.start):
            await self.start_worker(decision.reason, 0)
        for worker_id in decision.stop:
            self.stop_worker(worker_id)
        self._measure()

    def _measure(self) -> None:
        workers = self.workers.values()
        registered = [w for w in workers if w.registered and not w.stopping]
        metrics.POOL_WORKERS.labels("registered").set(len(registered))
        metrics.POOL_WORKERS.labels("starting").set(
            sum(1 for w in workers if not w.registered and not w.stopping)
        )
        metrics.POOL_WORKERS.labels("stopping").set(sum(1 for w in workers if w.stopping))
        loads = [w.load for w in registered if w.load is not None]
        metrics.POOL_LOAD.set(sum(loads) / len(loads) if loads else 0.0)
        metrics.POOL_ACTIVE_JOBS.set(sum(w.active_jobs for w in registered))
        metrics.POOL_CAPACITY.set(
            self.settings.agent_pool_max * self.settings.agent_jobs_per_worker
        )

    async def start_worker(self, reason: str, attempt: int) -> PoolWorker:
        worker_id = f"agent-{uuid.uuid4().hex[:8]}"
        port = _free_port(self.settings.host)
        log_dir = self.settings.data_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            **to_environ(self.settings),
            "HF_HUB_OFFLINE": "1",
            "MEDIAI_AGENT_WORKER_ID": worker_id,
        }
        for variable in ("NATS_USER", "NATS_PASSWORD", "MEDIAI_AGENT_NATS_PASSWORD"):
            env.pop(variable, None)  # never the dispatcher's own user
        env.update(self._agent_login())
        with (log_dir / f"agent-worker-{worker_id}.log").open("ab") as log_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.agent",  # `mediai agent-worker`, without the CLI's other imports
                "--worker-id",
                worker_id,
                "--http-port",
                str(port),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        worker = PoolWorker(
            worker_id=worker_id,
            process=process,
            http_port=port,
            started=time.monotonic(),
            attempt=attempt,
        )
        self.workers[worker_id] = worker
        monitor = asyncio.create_task(self._monitor(worker), name=f"pool-{worker_id}")
        self._monitors.add(monitor)
        monitor.add_done_callback(self._monitors.discard)
        log.info("pool: started agent worker %s (pid %d, %s)", worker_id, process.pid, reason)
        await self._publish(
            AgentWorkerStarted(
                worker_id=worker_id,
                pid=process.pid,
                reason=reason,
                attempt=attempt,
                started_at=datetime.now(UTC),
            ),
            key=worker_id,
        )
        return worker

    def _agent_login(self) -> dict[str, str]:
        """A worker connects to NATS as the agent workers' user, never as the dispatcher: its
        permissions are the agent's (docs/deployment.md, "Who may do what on the bus")."""
        if self.settings.agent_nats_password is None:
            return {}
        return {
            "NATS_USER": self.settings.agent_nats_user,
            "NATS_PASSWORD": self.settings.agent_nats_password,
        }

    def stop_worker(self, worker_id: str) -> None:
        """Drain one worker: SIGTERM makes it end its sessions gracefully, then exit."""
        worker = self.workers.get(worker_id)
        if worker is not None and not worker.stopping:
            worker.stopping = True
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)

    async def _monitor(self, worker: PoolWorker) -> None:
        code = await worker.process.wait()
        # Whatever the worker left in its process group (job processes) goes with it.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(worker.process.pid, signal.SIGKILL)
        self.workers.pop(worker.worker_id, None)
        self._update_registered()
        uptime = time.monotonic() - worker.started
        expected = worker.stopping or self._stopping
        delay: float | None = None
        if not expected:
            attempt = core.next_attempt(worker.attempt, uptime)
            delay = core.restart_delay(attempt)
            self._restarts.append((time.monotonic() + delay, attempt))
            log.error(
                "pool: agent worker %s died (code %s); restarting in %.1fs",
                worker.worker_id,
                code,
                delay,
            )
        await self._publish(
            AgentWorkerExited(
                worker_id=worker.worker_id,
                pid=worker.process.pid,
                exit_code=code if code >= 0 else None,
                signal=-code if code < 0 else None,
                expected=expected,
                uptime_seconds=round(uptime, 3),
                restart_delay_seconds=delay,
                exited_at=datetime.now(UTC),
            ),
            key=worker.worker_id,
        )

    async def _poll_loads(self, http: aiohttp.ClientSession) -> None:
        async def poll(worker: PoolWorker) -> None:
            url = f"http://{self.settings.host}:{worker.http_port}/worker"
            try:
                async with http.get(url) as response:
                    info: dict[str, Any] = await response.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                return  # not listening yet, or busy: keep the last known load
            worker.load = float(info.get("worker_load", 0.0))
            worker.active_jobs = int(info.get("active_jobs", 0))
            if worker.active_jobs:
                worker.idle_since = time.monotonic()

        registered = [w for w in self.workers.values() if w.registered]
        await asyncio.gather(*(poll(w) for w in registered))

    async def _on_registered(self, message: Any) -> None:
        event = CODEC.decode(message.data)
        if isinstance(event.data, AgentWorkerRegistered):
            worker = self.workers.get(event.data.worker_id)
            if worker is not None:
                worker.registered = True
                self._update_registered()

    def _update_registered(self) -> None:
        """The pool is ready (and with it the pool service's /readyz, so `mediai up` says ready
        only then) once a worker is registered with LiveKit and can take a dispatch at once."""
        if any(w.registered and not w.stopping for w in self.workers.values()):
            self._registered.set()
            self.health.running()
        else:
            self._registered.clear()
            if self.settings.agent_pool_min > 0 and not self._stopping:
                self.health.waiting("agent-worker", "no worker registered with LiveKit yet")

    async def drain(self) -> None:
        """Stop every worker gracefully within the drain timeout, then kill what is left."""
        self._stopping = True
        self._restarts.clear()
        for worker_id in list(self.workers):
            self.stop_worker(worker_id)
        monitors = set(self._monitors)
        if not monitors:
            return
        _, pending = await asyncio.wait(monitors, timeout=self.settings.agent_drain_timeout + 0.5)
        for worker in list(self.workers.values()):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(worker.process.pid, signal.SIGKILL)
        if pending:
            await asyncio.wait(pending, timeout=2.0)

    async def _publish(self, data: Event, *, key: str) -> None:
        """Through the outbox, whose relay publishes once NATS takes it: a worker that dies
        while NATS is away still fails its dispatches (``worker_lost``) once NATS is back, and
        the pool never waits on NATS to start or count a worker."""
        if self.bus is None or self.db is None:
            return
        try:
            async with self.db.acquire() as conn:
                await add_to_outbox(
                    conn, data, source=self.bus.source, tenant=SYSTEM_TENANT, key=key
                )
        except (asyncpg.PostgresError, OSError) as error:
            log.error("pool: could not record %s: %s", data.TYPE, type(error).__name__)
