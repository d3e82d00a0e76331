"""Whether a dispatch can be taken now, from the agent workers' own load reports: pure, no I/O,
no clock reads (``now`` is passed in)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from services.dispatcher.core import DispatchRejectedError
from shared.events.agents import AgentWorkerLoadReported
from shared.http import RETRY_AFTER_SECONDS  # the Retry-After header of every 503

# A worker silent for this many of its report periods is gone (its host vanished).
SILENT_PERIODS = 3


@dataclass(frozen=True)
class WorkerLoad:
    """The last word of one worker: its jobs, its limit, whether it takes more, until when."""

    worker_id: str
    active_jobs: int
    max_jobs: int
    available: bool
    expires_at: datetime
    heartbeat_seconds: float = 0.0  # 0: the worker does not beat; its reports alone keep it

    @property
    def free(self) -> int:
        return max(0, self.max_jobs - self.active_jobs) if self.available else 0


def evolve(
    loads: dict[str, WorkerLoad], report: AgentWorkerLoadReported, now: datetime
) -> dict[str, WorkerLoad]:
    """The loads after a report, received at ``now`` (the receiver's clock: hosts' clocks
    drift); a report of a worker that stopped taking jobs with none left removes it."""
    after = {k: v for k, v in loads.items() if k != report.worker_id}
    if report.available or report.active_jobs:
        period = report.heartbeat_seconds or report.next_report_seconds
        after[report.worker_id] = WorkerLoad(
            worker_id=report.worker_id,
            active_jobs=report.active_jobs,
            max_jobs=report.max_jobs,
            available=report.available,
            expires_at=now + timedelta(seconds=period * SILENT_PERIODS),
            heartbeat_seconds=report.heartbeat_seconds,
        )
    return after


def heard(loads: dict[str, WorkerLoad], worker_id: str, now: datetime) -> dict[str, WorkerLoad]:
    """The loads after a worker's heartbeat at ``now``: it stays counted three more beats. A
    beat never brings back a worker its report did not (the report carries its load)."""
    load = loads.get(worker_id)
    if load is None or not load.heartbeat_seconds:
        return loads
    expires_at = now + timedelta(seconds=load.heartbeat_seconds * SILENT_PERIODS)
    return {**loads, worker_id: replace(load, expires_at=max(load.expires_at, expires_at))}


def forget(loads: dict[str, WorkerLoad], worker_id: str) -> dict[str, WorkerLoad]:
    """The loads without a worker that exited (its pool said so)."""
    return {k: v for k, v in loads.items() if k != worker_id}


def check(loads: dict[str, WorkerLoad], *, starting: int, now: datetime, running: int = 0) -> None:
    """Raise DispatchRejectedError (503) unless some worker has a free slot once the
    ``starting`` dispatches (accepted, not yet joined: no worker counts them yet) are placed.
    ``running``, the sessions joined, is a floor under the jobs the workers report: a session
    that joined before its worker's report arrived holds its slot all the same."""
    live = [w for w in loads.values() if w.expires_at > now]
    retry = {"retryAfterSeconds": RETRY_AFTER_SECONDS}
    if not any(w.available for w in live):
        raise DispatchRejectedError(
            "no agent worker is registered with LiveKit; retry shortly",
            code="no_agent_worker",
            status=503,
            details=[{**retry, "workers": 0}],
        )
    capacity = sum(w.max_jobs for w in live if w.available)
    reported = sum(w.active_jobs for w in live)
    active = max(reported, running)
    if sum(w.free for w in live) - (active - reported) - starting <= 0:
        raise DispatchRejectedError(
            f"every agent worker is at capacity ({active} sessions running, {starting} "
            f"starting, {capacity} in all); retry shortly",
            code="agents_at_capacity",
            status=503,
            details=[
                {
                    **retry,
                    "workers": len(live),
                    "activeJobs": active,
                    "startingJobs": starting,
                    "capacity": capacity,
                }
            ],
        )
