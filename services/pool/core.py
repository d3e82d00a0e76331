"""The worker pool's decisions, free of I/O and clocks: how many workers, which to stop, when to
restart one that died."""

from __future__ import annotations

from dataclasses import dataclass

# A worker that lived this long before dying starts its restart backoff from the beginning.
STABLE_SECONDS = 60.0
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
# Scale down only after a worker has been idle this long (and never below the minimum).
IDLE_SECONDS = 120.0


@dataclass(frozen=True)
class WorkerView:
    """What the pool knows of one worker at a moment."""

    worker_id: str
    registered: bool
    load: float | None  # None: not reported yet
    active_jobs: int
    idle_seconds: float  # how long it has had no job
    stopping: bool = False


@dataclass(frozen=True)
class Plan:
    start: int  # how many workers to start now
    reason: str  # "minimum" or "scale_up"
    stop: tuple[str, ...]  # workers to drain


def plan(
    workers: list[WorkerView],
    *,
    minimum: int,
    maximum: int,
    scale_up_load: float,
    restarting: int = 0,
) -> Plan:
    """What to do now. ``restarting`` counts dead workers waiting out their backoff (they are
    part of the pool: no new worker is started in their place)."""
    alive = [w for w in workers if not w.stopping]
    size = len(alive) + restarting
    if size < minimum:
        return Plan(start=minimum - size, reason="minimum", stop=())
    starting = [w for w in alive if not w.registered]
    reporting = [w for w in alive if w.registered and w.load is not None]
    if (
        size < maximum
        and not starting
        and not restarting
        and reporting
        and all(w.load is not None and w.load >= scale_up_load for w in reporting)
    ):
        return Plan(start=1, reason="scale_up", stop=())
    idle = sorted(
        (w for w in reporting if w.active_jobs == 0 and w.idle_seconds >= IDLE_SECONDS),
        key=lambda w: -w.idle_seconds,
    )
    if size > minimum and idle and not starting:
        # At most one at a time, and only if the others are not about to need it.
        others = [w for w in reporting if w.worker_id != idle[0].worker_id]
        if not others or all(w.load is not None and w.load < scale_up_load for w in others):
            return Plan(start=0, reason="", stop=(idle[0].worker_id,))
    return Plan(start=0, reason="", stop=())


def restart_delay(attempt: int) -> float:
    """Seconds before restarting a worker that died ``attempt`` times in a row (0 = first)."""
    return float(min(BACKOFF_MAX, BACKOFF_FIRST * 2.0**attempt))


def next_attempt(previous_attempt: int, uptime_seconds: float) -> int:
    """The attempt count of the next restart: back to 0 after a worker that ran stably."""
    return 0 if uptime_seconds >= STABLE_SECONDS else previous_attempt + 1
