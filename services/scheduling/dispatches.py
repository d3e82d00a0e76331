"""Which dispatches are live, and whose: the agents' requests act for their dispatch's tenant.

An agent worker runs dispatches of every tenant under one NATS user, so nothing in its request
can prove a tenant; what it can name is the dispatch it runs. The tenant comes from the
dispatch's ``AgentDispatchRequested``, which only the dispatcher's NATS user may publish, and
a request is answered only between that event and the dispatch's end (failed, or its session
failed or ended). The projection is small enough to keep its three statements here.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import asyncpg
from litestar import Litestar

from shared.consumer import Consumer, ConsumerSpec, Delivery
from shared.events import Envelope
from shared.events.agents import (
    AgentDispatchFailed,
    AgentDispatchRequested,
    AgentSessionEnded,
    AgentSessionFailed,
)

# A request may arrive a moment before this projection has read its dispatch (the agent joins
# as soon as the dispatcher has published it): wait this long for it before refusing.
CATCH_UP_SECONDS = 2.0


async def dispatch_requested(
    conn: asyncpg.Pool, dispatch_id: str, tenant: str, at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO scheduling_dispatches (dispatch_id, tenant_id, requested_at)"
        " VALUES ($1, $2, $3) ON CONFLICT (dispatch_id) DO UPDATE SET"
        " requested_at = coalesce(scheduling_dispatches.requested_at, EXCLUDED.requested_at)",
        dispatch_id,
        tenant,
        at,
    )


async def dispatch_over(conn: asyncpg.Pool, dispatch_id: str, tenant: str, at: datetime) -> None:
    await conn.execute(
        "INSERT INTO scheduling_dispatches (dispatch_id, tenant_id, ended_at)"
        " VALUES ($1, $2, $3) ON CONFLICT (dispatch_id) DO UPDATE SET"
        " ended_at = coalesce(scheduling_dispatches.ended_at, EXCLUDED.ended_at)",
        dispatch_id,
        tenant,
        at,
    )


async def live_tenant(pool: asyncpg.Pool, dispatch_id: str) -> str | None:
    """The tenant of a live dispatch; None when it is unknown or over."""
    deadline = time.monotonic() + CATCH_UP_SECONDS
    while True:
        row = await pool.fetchrow(
            "SELECT tenant_id, requested_at, ended_at FROM scheduling_dispatches"
            " WHERE dispatch_id = $1",
            dispatch_id,
        )
        if row is not None and row["ended_at"] is not None:
            return None
        if row is not None and row["requested_at"] is not None:
            return str(row["tenant_id"])
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.1)


async def on_requested(pool: asyncpg.Pool, event: Envelope, delivery: Delivery) -> None:
    assert isinstance(event.data, AgentDispatchRequested)
    await dispatch_requested(pool, event.data.dispatch_id, event.tenant, event.time)


async def on_over(pool: asyncpg.Pool, event: Envelope, delivery: Delivery) -> None:
    assert isinstance(event.data, AgentDispatchFailed | AgentSessionFailed | AgentSessionEnded)
    await dispatch_over(pool, event.data.dispatch_id, event.tenant, event.time)


# Upserts that never undo an end: idempotent and order-tolerant without an inbox.
DISPATCHES: ConsumerSpec[asyncpg.Pool] = ConsumerSpec(
    durable="scheduling-dispatches",
    handlers={
        AgentDispatchRequested: on_requested,
        AgentDispatchFailed: on_over,
        AgentSessionFailed: on_over,
        AgentSessionEnded: on_over,
    },
)


async def run_dispatches_consumer(app: Litestar) -> None:
    await Consumer(app.state.bus, DISPATCHES, app.state.pool).run()
