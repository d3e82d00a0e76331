"""Background work of a service: each task supervised on its own, its health visible.

A service declares its tasks (consumers, relays, periodic jobs) as ``BackgroundTask`` values; the
app factory runs each under ``supervise``: restarted with backoff when it fails, the backoff reset
once it has run fine for a while, and its state (running, waiting for a dependency, restarting)
kept in a ``TaskHealth`` that ``/readyz`` shows. A task reports into its health through
``TaskHealth.current()``, so a consumer deep inside a task needs no extra wiring.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from shared import metrics
from shared.failures import unavailable_dependency

log = logging.getLogger(__name__)

# A task that ran this long without failing starts its next restart from the shortest delay.
STABLE_SECONDS = 60.0
RECOVERED_SECONDS = 5.0
RESTART_DELAYS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)

_current: contextvars.ContextVar[TaskHealth | None] = contextvars.ContextVar(
    "mediai_task_health", default=None
)


@dataclass
class TaskHealth:
    """The state of one background task: ``running``, ``waiting`` (for a dependency, named in
    ``detail``), ``restarting`` (after a failure) or ``starting``."""

    name: str
    state: str = "starting"
    detail: str = ""
    since: float = field(default_factory=time.monotonic)
    _outage_logged: bool = False

    @property
    def ready(self) -> bool:
        return self.state == "running"

    @property
    def waiting_for(self) -> str | None:
        return self.detail if self.state == "waiting" else None

    def running(self) -> None:
        if self.state == "waiting":
            log.warning(
                "%s: %s is back after %.1fs; carrying on",
                self.name,
                self.detail,
                time.monotonic() - self.since,
            )
        self._set("running", "")

    def waiting(self, dependency: str, why: BaseException | str) -> None:
        """The task cannot go on until ``dependency`` is there (logged once per outage)."""
        if self.state != "waiting" or self.detail != dependency:
            log.warning(
                "%s: waiting for %s (%s); holding its work until it is there",
                self.name,
                dependency,
                why if isinstance(why, str) else type(why).__name__,
            )
            self._set("waiting", dependency)

    def restarting(self, error: BaseException) -> None:
        metrics.TASK_RESTARTS.labels(self.name).inc()
        self._set("restarting", type(error).__name__)

    def view(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"state": self.state, "for_seconds": round(self.age, 1)}
        if self.detail:
            shown["detail"] = self.detail
        return shown

    @property
    def age(self) -> float:
        return time.monotonic() - self.since

    def _set(self, state: str, detail: str) -> None:
        if (state, detail) != (self.state, self.detail):
            self.state, self.detail, self.since = state, detail, time.monotonic()
            metrics.TASK_UP.labels(self.name).set(1 if state == "running" else 0)

    @staticmethod
    def current() -> TaskHealth:
        """The health of the task running this code (a detached one outside a supervised task:
        tests and CLI commands run consumers too)."""
        return _current.get() or TaskHealth(name="detached")


Run = Callable[[Any], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class BackgroundTask:
    """A coroutine function of the app (``run(app)``) that runs for the app's lifetime."""

    name: str
    run: Run


def every(name: str, period: float, job: Run) -> BackgroundTask:
    """A periodic task: ``job(app)`` every ``period`` seconds. An outage of a dependency makes
    the task wait (its health says for what) and try again next period; any other failure is
    logged and tried again next period too, without a restart: each run is independent."""

    async def loop(app: Any) -> None:
        health = TaskHealth.current()
        while True:
            try:
                await job(app)
                health.running()
            except Exception as error:
                dependency = unavailable_dependency(error)
                if dependency is not None:
                    health.waiting(dependency, error)
                else:
                    health.restarting(error)
                    log.exception("%s failed; trying again in %.0fs", name, period)
            await asyncio.sleep(period)

    return BackgroundTask(name, loop)


async def supervise(task: BackgroundTask, app: Any, health: TaskHealth) -> None:
    """Run ``task`` for the app's lifetime, restarting it when it fails or returns: a task that
    died unseen would leave events unhandled while the service still answered ready.

    A task restarted after waiting for a dependency counts as running again once it has run for
    ``RECOVERED_SECONDS`` without failing (consumers and periodic tasks say so sooner)."""
    _current.set(health)
    failures = 0
    while True:
        started = time.monotonic()
        if health.state != "waiting":
            health.running()
        running = asyncio.create_task(task.run(app), name=task.name)
        try:
            done, _ = await asyncio.wait({running}, timeout=RECOVERED_SECONDS)
            if not done and health.state == "waiting" and health.since < started:
                health.running()  # it has said nothing since the restart: it runs
            await running
            health.restarting(RuntimeError("returned"))
            log.warning("background task %s returned; restarting it", task.name)
        except asyncio.CancelledError:
            # The task's own cleanup (a consumer's unsubscribe, a connection going back to the
            # pool) finishes before the service closes the bus and the pool under it. Left
            # behind, about one stop of the stack in three hung in the app's shutdown, with
            # the pool's close waiting, until the stop's SIGKILL.
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            raise
        except Exception as error:
            dependency = unavailable_dependency(error)
            if dependency is not None:
                health.waiting(dependency, error)
            else:
                health.restarting(error)
                log.error("background task %s failed; restarting it", task.name, exc_info=error)
        if time.monotonic() - started > STABLE_SECONDS:
            failures = 0
        await asyncio.sleep(RESTART_DELAYS[min(failures, len(RESTART_DELAYS) - 1)])
        failures += 1
