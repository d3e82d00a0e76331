"""Which agent workers are registered with LiveKit, as the log tells (the pools run elsewhere):
a dispatch made right after start-up waits for one, since LiveKit drops a job no worker takes."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from nats.js.api import ConsumerConfig, DeliverPolicy

from shared import subjects
from shared.bus import Bus
from shared.events import CODEC
from shared.events.agents import AgentWorkerExited, AgentWorkerRegistered
from shared.naming import SYSTEM_TENANT


class WorkerRegistry:
    """Workers registered and not exited, from every pool's events since the stream began."""

    def __init__(self, enabled: bool = True) -> None:
        # Off when no pool exists by design (tests that dispatch to nobody; an orchestrator
        # whose workers publish nothing): then a dispatch is sent at once.
        self.enabled = enabled
        self.registered: set[str] = set()
        self.exited: set[str] = set()
        self._live = asyncio.Event()

    @property
    def live(self) -> set[str]:
        return self.registered - self.exited

    async def wait_ready(self, within: float) -> bool:
        """Wait until a worker is registered (False after ``within`` seconds)."""
        if not self.enabled:
            return True
        try:
            await asyncio.wait_for(self._live.wait(), max(within, 0.0))
        except TimeoutError:
            return False
        return True

    async def run(self, bus: Bus) -> None:
        """Follow the workers' events until cancelled."""
        subscriptions = [
            await bus.js.subscribe(
                subjects.type_filter(kind, SYSTEM_TENANT),
                # Named, not looked up: the dispatcher's NATS user may not list streams.
                stream=subjects.stream_name(kind.STREAM),
                cb=self._on_event,
                ordered_consumer=True,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
            )
            for kind in (AgentWorkerRegistered, AgentWorkerExited)
        ]
        try:
            await asyncio.Event().wait()
        finally:
            for subscription in subscriptions:
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()

    async def _on_event(self, message: Any) -> None:
        data = CODEC.decode(message.data).data
        if isinstance(data, AgentWorkerRegistered):
            self.registered.add(data.worker_id)
        elif isinstance(data, AgentWorkerExited):
            self.exited.add(data.worker_id)
        if self.live:
            self._live.set()
        else:
            self._live.clear()
