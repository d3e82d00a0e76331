"""Which dispatches are live, as the key service learns it from the event log: an agent job
gets its dispatch's keys from its request until it fails or ends."""

from __future__ import annotations

import asyncpg

from services.keys import store
from shared.consumer import ConsumerSpec, Delivery, data_of
from shared.events import Envelope
from shared.events.agents import (
    AgentDispatchFailed,
    AgentDispatchRequested,
    AgentSessionEnded,
    AgentSessionFailed,
)
from shared.phi import patient_of


async def on_requested(pool: asyncpg.Pool, event: Envelope, delivery: Delivery) -> None:
    request = data_of(event, AgentDispatchRequested)
    await store.dispatch_requested(
        pool, request.dispatch_id, event.tenant, patient_of(request), event.time
    )


async def on_over(pool: asyncpg.Pool, event: Envelope, delivery: Delivery) -> None:
    dispatch_id: str = getattr(event.data, "dispatch_id", "")
    await store.dispatch_ended(pool, dispatch_id, event.tenant, event.time)


# Upserts that never undo an end: idempotent and order-tolerant without an inbox. Nothing here
# needs personal data, so nothing is opened.
DISPATCHES: ConsumerSpec[asyncpg.Pool] = ConsumerSpec(
    durable="keys-dispatches",
    handlers={
        AgentDispatchRequested: on_requested,
        AgentDispatchFailed: on_over,
        AgentSessionFailed: on_over,
        AgentSessionEnded: on_over,
    },
)
