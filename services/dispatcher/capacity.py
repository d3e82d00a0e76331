"""The dispatcher's view of agent capacity across every worker host: the workers' own load
reports (``AgentWorkerLoadReported``), folded by ``capacity_core``, so ``POST /v1/agents``
refuses at once (503, Retry-After) when no worker has room rather than accepting a dispatch
that would fail at its deadline.

Why the workers' reports: LiveKit's server API does not expose workers or their load, and the
local pool sees only its own host; every worker, wherever it runs, reports on the bus. A host
killed outright publishes no exit for its workers, so each worker also beats every few seconds
on core NATS, and three missed beats forget it (reports alone: three missed reports, 90 s).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
from nats.js.api import ConsumerConfig, DeliverPolicy

from services.dispatcher import capacity_core, store
from shared import subjects
from shared.background import TaskHealth
from shared.bus import Bus
from shared.events import CODEC
from shared.events.agents import AgentWorkerExited, AgentWorkerLoadReported
from shared.naming import SYSTEM_TENANT


class Capacity:
    """The last load of every worker, kept current by ``follow`` for the app's lifetime."""

    def __init__(self) -> None:
        self.loads: dict[str, capacity_core.WorkerLoad] = {}
        # Dispatches this process let through whose rows may not be written yet: a burst of
        # requests all counting the same committed rows would all find the same free slot.
        self._reserved = 0
        self._counting = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def reserve(self, pool: asyncpg.Pool) -> AsyncIterator[None]:
        """Hold a slot while a dispatch is accepted (its event published and its row written),
        or raise DispatchRejectedError (503) when no worker has room for one more. The count
        and the check are one at a time in this process (a short query, not the publish), so
        each request sees the ones let through before it."""
        async with self._counting:
            starting, running = await store.count_placed(pool)
            capacity_core.check(
                self.loads,
                starting=starting + self._reserved,
                running=running,
                now=datetime.now(UTC),
            )
            self._reserved += 1
        try:
            yield
        finally:
            self._reserved -= 1

    def _on_heartbeat(self, message: Any) -> None:
        worker_id = subjects.untoken(message.subject.rsplit(".", 1)[1])
        self.loads = capacity_core.heard(self.loads, worker_id, datetime.now(UTC))

    def _on_event(self, message: Any) -> None:
        data = CODEC.decode(message.data).data
        if isinstance(data, AgentWorkerLoadReported):
            self.loads = capacity_core.evolve(self.loads, data, datetime.now(UTC))
        elif isinstance(data, AgentWorkerExited):
            self.loads = capacity_core.forget(self.loads, data.worker_id)

    async def follow(self, bus: Bus) -> None:
        """Each worker's last report first (a restarted dispatcher knows them at once), then
        every new report, exit and heartbeat, until cancelled."""

        async def on_message(message: Any) -> None:
            self._on_event(message)

        async def on_heartbeat(message: Any) -> None:
            self._on_heartbeat(message)

        # Subscribed before the reports are read, so no beat after a report is missed.
        beats = await bus.nc.subscribe(subjects.worker_heartbeats(), cb=on_heartbeat)
        reports = await bus.js.subscribe(
            subjects.type_filter(AgentWorkerLoadReported, SYSTEM_TENANT),
            stream=subjects.stream_name(AgentWorkerLoadReported.STREAM),
            cb=on_message,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT),
        )
        exits = await bus.js.subscribe(
            subjects.type_filter(AgentWorkerExited, SYSTEM_TENANT),
            stream=subjects.stream_name(AgentWorkerExited.STREAM),
            cb=on_message,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
        )
        TaskHealth.current().running()
        try:
            await asyncio.Event().wait()
        finally:
            for subscription in (reports, exits, beats):
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()
