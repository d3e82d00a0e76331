"""The worker's load on the bus: how many jobs it runs out of the most it takes, so the
dispatcher can refuse a dispatch at once when no worker on any host has room.

LiveKit's server API does not tell anyone a worker's load (a worker reports it to LiveKit over
its own WebSocket, and only LiveKit's scheduler reads it), so each worker says it here too, the
same count its load function gives LiveKit (docs/performance.md, "Capacity").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

import nats.errors

from shared import subjects
from shared.bus import Bus, BusUnavailableError
from shared.events.agents import AgentWorkerLoadReported
from shared.naming import SYSTEM_TENANT

log = logging.getLogger("mediai.agent")

# A report on the log at least this often (the dispatcher forgets a worker silent 3 periods).
REPORT_SECONDS = 30.0
# A beat on core NATS this often (not stored): a host killed outright, whose workers publish
# no exit, is forgotten after 3 missed beats rather than 3 reports, so the dispatcher stops
# accepting dispatches for its capacity within seconds.
HEARTBEAT_SECONDS = 2.0
# How often the count is looked at: a taken slot is known to the dispatcher within this.
CHECK_SECONDS = 0.25
# livekit-agents tells LiveKit the worker's load every 2.5 s (from a count refreshed every
# 0.5 s, on a loop a busy host may delay), and LiveKit drops a job that finds every worker
# full. A freed slot is announced once LiveKit has heard of it too, so the dispatcher never
# hands LiveKit a job that LiveKit would think has nowhere to go.
LIVEKIT_LAG_SECONDS = 4.0


class LoadReporter:
    """Publishes ``AgentWorkerLoadReported`` once registered: on every change, and every
    ``REPORT_SECONDS`` otherwise. ``jobs()`` counts the jobs running or being accepted."""

    def __init__(self, bus: Bus, worker_id: str, max_jobs: int, jobs: Callable[[], int]) -> None:
        self.bus, self.worker_id, self.max_jobs, self.jobs = bus, worker_id, max_jobs, jobs
        self.registered = False
        self.available = True
        self._last: tuple[int, bool] | None = None
        self._due = 0.0
        self._beat_due = 0.0
        self._recent: list[tuple[float, int]] = []  # (when, jobs) over the last LiveKit lag

    async def report(self) -> None:
        """Beat if due; publish the load now if something changed or a report is due. A failed
        publish is tried again at the next look (NATS away: the dispatcher forgets this worker
        meanwhile)."""
        await self._beat()
        current = (self.counted(time.monotonic()), self.available)
        if not self.registered or (current == self._last and time.monotonic() < self._due):
            return
        event = AgentWorkerLoadReported(
            worker_id=self.worker_id,
            active_jobs=current[0],
            max_jobs=self.max_jobs,
            available=current[1],
            next_report_seconds=REPORT_SECONDS,
            reported_at=datetime.now(UTC),
            heartbeat_seconds=HEARTBEAT_SECONDS,
        )
        try:
            await self.bus.publish(event, tenant=SYSTEM_TENANT, key=self.worker_id)
        except (BusUnavailableError, TimeoutError, OSError) as error:
            log.warning("load report not published: %s", type(error).__name__)
            return
        self._last, self._due = current, time.monotonic() + REPORT_SECONDS

    async def _beat(self) -> None:
        if not self.registered or time.monotonic() < self._beat_due:
            return
        self._beat_due = time.monotonic() + HEARTBEAT_SECONDS
        # Disconnected: the beats resume with the connection; the next report says the rest.
        with contextlib.suppress(nats.errors.Error, OSError):
            await self.bus.nc.publish(subjects.worker_heartbeat(self.worker_id), b"")

    def counted(self, now: float) -> int:
        """The most jobs run within the last LiveKit lag: a rise counts at once, a fall once
        LiveKit has been told."""
        self._recent = [(t, n) for t, n in self._recent if t > now - LIVEKIT_LAG_SECONDS]
        self._recent.append((now, self.jobs()))
        return max(n for _, n in self._recent)

    async def run(self) -> None:
        while True:
            await self.report()
            await asyncio.sleep(CHECK_SECONDS)
