"""The transactional outbox: an event is written in the same transaction as the state it
announces, then relayed to JetStream, so the database and the log never diverge.

The relay publishes with the event's own id as ``Nats-Msg-Id``, so a relay that crashes between
publishing and marking the row sent republishes a duplicate JetStream drops. Personal fields are
sealed before the row is written (``phi``; a row lingers in dead tuples and WAL after it is
sent), so an event type with personal fields needs it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

import asyncpg

from shared.bus import Bus, BusUnavailableError
from shared.db import Connection
from shared.events import CODEC, Envelope, Event, envelope
from shared.events.privacy import sealing_plan
from shared.phi import Phi
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
    phi: Phi | None = None,
) -> Envelope:
    """Record an event to publish once the surrounding transaction commits (sealed with
    ``phi`` when it carries personal data); returns it as given, unsealed."""
    if phi is None and sealing_plan(type(data)):
        raise ValueError(f"{data.TYPE} carries personal data: pass phi to seal it")
    event = envelope(
        data,
        source=source,
        tenant=tenant,
        subject=key,
        time=time,
        traceparent=current_traceparent(),
    )
    stored = event if phi is None else await phi.seal(event)
    await conn.execute(
        "INSERT INTO outbox (event_id, payload) VALUES ($1, $2)", event.id, CODEC.encode(stored)
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
