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

    async def check(self, pool: asyncpg.Pool) -> None:
        """DispatchRejectedError (503) unless a worker has room for one more dispatch."""
        starting, running = await store.count_placed(pool)
        capacity_core.check(self.loads, starting=starting, running=running, now=datetime.now(UTC))

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
