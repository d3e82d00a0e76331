"""The worker pool on its own: it starts real agent workers, each registers with the stack's
LiveKit, and stopping the pool drains them (an event each) and leaves no process behind."""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec
import pytest

from services.dispatcher.pool import WorkerPool
from shared.bus import Bus
from shared.config import Settings
from shared.events.agents import AgentWorkerExited, AgentWorkerRegistered, AgentWorkerStarted
from shared.outbox import run_outbox_relay
from tests.support import until
from tests.test_agent_e2e import alive_in_group, following

pytestmark = pytest.mark.livekit


async def test_the_pool_starts_its_minimum_and_drains_on_shutdown(
    settings: Settings, bus: Bus, pool: asyncpg.Pool
) -> None:
    # Its events go through the database's outbox, as this process's (the pool's bus): each
    # component relays its own rows, so this test runs the relay of its own.
    # An idle worker drains at once; the timeout is only a bound, generous on a loaded machine
    # (a worker killed at the bound is what this test would catch).
    drained = msgspec.structs.replace(
        settings, agent_pool_min=1, agent_pool_max=1, agent_drain_timeout=30
    )
    workers = WorkerPool(drained)
    relaying = asyncio.create_task(run_outbox_relay(pool, bus, interval=0.2))
    async with following(
        bus, AgentWorkerStarted, AgentWorkerRegistered, AgentWorkerExited
    ) as events:
        running = asyncio.create_task(workers.run(bus, pool))
        started = await events.next(
            AgentWorkerStarted, where=lambda d: d.worker_id in workers.workers
        )
        mine = started.worker_id
        assert mine in workers.workers
        registered = await events.next(
            AgentWorkerRegistered, where=lambda d: d.worker_id == mine, timeout=90
        )
        assert registered.pid == started.pid
        assert await workers.wait_ready(1.0)

        running.cancel()  # what the dispatcher's shutdown does
        await asyncio.gather(running, return_exceptions=True)
        exited = await events.next(AgentWorkerExited, where=lambda d: d.worker_id == mine)
    relaying.cancel()
    assert exited.expected and exited.restart_delay_seconds is None
    assert exited.exit_code == 0  # it drained and exited by itself, not killed
    assert not workers.workers
    await until(lambda: not alive_in_group(started.pid), 5)  # SIGKILL delivery takes a moment
