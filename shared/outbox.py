"""The transactional outbox: an event is written in the same transaction as the state it
announces, then relayed to JetStream, so the database and the log never diverge.

The relay publishes with the event's own id as ``Nats-Msg-Id``, so a relay that crashes between
publishing and marking the row sent republishes a duplicate JetStream drops.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import asyncpg

from shared.bus import Bus, BusUnavailableError
from shared.db import Connection
from shared.events import CODEC, Envelope, Event, envelope
from shared.telemetry import current_traceparent

log = logging.getLogger(__name__)


async def add_to_outbox(
    conn: Connection,
    data: Event,
    *,
    source: str,
    tenant: str,
    key: str,
    time: datetime | None = None,
    event_id: str | None = None,
) -> Envelope:
    """Record an event to publish once the surrounding transaction commits; ``event_id`` (a
    fresh UUIDv7 when None) lets a producer give a finding a deterministic id."""
    event = envelope(
        data,
        source=source,
        tenant=tenant,
        subject=key,
        event_id=event_id,
        time=time,
        traceparent=current_traceparent(),
    )
    await conn.execute(
        "INSERT INTO outbox (event_id, payload) VALUES ($1, $2)", event.id, CODEC.encode(event)
    )
    return event


async def relay_outbox(pool: asyncpg.Pool, bus: Bus, *, batch: int = 100) -> int:
    """Publish pending outbox events in order; returns how many were published."""
    published = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT position, payload FROM outbox WHERE published_at IS NULL"
                " ORDER BY position LIMIT $1 FOR UPDATE SKIP LOCKED",
                batch,
            )
            for row in rows:
                await bus.publish_envelope(CODEC.decode(row["payload"]))
                await conn.execute(
                    "UPDATE outbox SET published_at = now() WHERE position = $1", row["position"]
                )
        published += len(rows)
        if len(rows) < batch:
            return published


async def run_outbox_relay(pool: asyncpg.Pool, bus: Bus, *, interval: float = 1.0) -> None:
    """Relay forever (until cancelled); a NATS outage only delays events, never loses them."""
    while True:
        try:
            await relay_outbox(pool, bus)
        except (BusUnavailableError, OSError, asyncpg.PostgresError) as error:
            log.warning("outbox relay paused: %s", type(error).__name__)
        await asyncio.sleep(interval)
