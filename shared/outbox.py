"""The transactional outbox: an event is written in the same transaction as the state it
announces, then relayed to JetStream, so the database and the log never diverge.

Every service runs a relay over the one shared ``outbox`` table, and the events of one key (one
room, one appointment) reach the stream in the order they were written:

- Writers of one key take turns: ``add_to_outbox`` holds a per-key lock until its transaction
  ends, so a row's position is allocated only after every earlier row of its key committed.
  Without it a row could become visible before a lower position of its key still in flight.
- One relay publishes at a time: each batch runs under a transaction-level advisory lock that a
  relay tries, and leaves to whoever holds it. A transaction lock, rather than a session lock
  held by an elected relay, is released by the server whenever its holder ends or dies, needs no
  election or hand-over, and works through a transaction-pooling proxy (PgBouncer, Neon).
- A batch is published in position order and stops at the first failed publish; the rows
  published so far are marked, the rest wait for the next round.
- A row that cannot be decoded is set aside (``set_aside_at``, ``set_aside_reason``; listed by
  ``mediai streams``) and the relay carries on. Each relay process retries the set-aside rows once
  when it starts, so a row written by a newer release (an event type this one does not know) is
  published by the first upgraded process.

The relay publishes with the event's own id as ``Nats-Msg-Id``, so a relay that crashes between
publishing and marking the row sent republishes a duplicate JetStream drops. Personal fields are
sealed before the row is written (``phi``; a row lingers in dead tuples and WAL after it is
sent), so an event type with personal fields needs it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import nats.errors

from shared.bus import Bus, BusUnavailableError
from shared.db import Connection
from shared.events import CODEC, Envelope, Event, EventDecodeError, envelope
from shared.events.privacy import sealing_plan
from shared.metrics import OUTBOX_SET_ASIDE
from shared.phi import KeysUnavailableError, Phi
from shared.telemetry import current_traceparent

log = logging.getLogger(__name__)

# Advisory lock keys. The relay's is one 64-bit key (the migration runner uses 0x6D65646961);
# per-key writer locks use the two-int form, a separate key space: (class, hash of the key).
RELAY_LOCK = 0x6D656469610001
_KEY_LOCK_CLASS = 0x6F757462  # "outb"


async def add_to_outbox(
    conn: Connection,
    data: Event,
    *,
    source: str,
    tenant: str,
    key: str,
    time: datetime | None = None,
    event_id: str | None = None,
    phi: Phi | None = None,
) -> Envelope:
    """Record an event to publish once the surrounding transaction commits; ``event_id`` (a
    fresh UUIDv7 when None) lets a producer give a finding a deterministic id. An event with
    personal fields is sealed with ``phi`` before it is written; returns it as given, unsealed.

    Concurrent transactions writing events of the same key wait for each other here, until the
    first commits or rolls back: that is what keeps the key's events in order on the stream.
    """
    if phi is None and sealing_plan(type(data)):
        raise ValueError(f"{data.TYPE} carries personal data: pass phi to seal it")
    event = envelope(
        data,
        source=source,
        tenant=tenant,
        subject=key,
        event_id=event_id,
        time=time,
        traceparent=current_traceparent(),
    )
    stored = event if phi is None else await phi.seal(event)
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))", _KEY_LOCK_CLASS, f"{tenant}/{key}"
    )
    await conn.execute(
        "INSERT INTO outbox (event_id, payload) VALUES ($1, $2)", event.id, CODEC.encode(stored)
    )
    return event


_PENDING = (
    "SELECT position, event_id, payload, set_aside_at FROM outbox"
    " WHERE published_at IS NULL AND position > $1 {} ORDER BY position LIMIT $2"
)


async def relay_outbox(
    pool: asyncpg.Pool, bus: Bus, *, batch: int = 100, retry_set_aside: bool = False
) -> int | None:
    """Publish pending outbox events in position order; returns how many were published, or
    None when another relay holds the lock (it publishes these rows too).

    Raises BusUnavailableError or a NATS error after the first publish that failed, once the
    rows published before it are marked; ``retry_set_aside`` tries the set-aside rows again.
    """
    query = _PENDING.format("" if retry_set_aside else "AND set_aside_at IS NULL")
    published, after = 0, 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", RELAY_LOCK):
                return None
            rows = await conn.fetch(query, after, batch)
            done, failure = await _publish_in_order(conn, bus, rows)
        published += done
        if failure is not None:
            raise failure
        if len(rows) < batch:
            return published
        after = rows[-1]["position"]


async def _publish_in_order(
    conn: Connection, bus: Bus, rows: Sequence[asyncpg.Record]
) -> tuple[int, Exception | None]:
    published = 0
    for row in rows:
        try:
            await bus.publish_envelope(CODEC.decode(row["payload"]))
        except EventDecodeError as error:
            await _set_aside(conn, row, f"undecodable: {error}")
            continue
        except nats.errors.MaxPayloadError:
            await _set_aside(conn, row, "larger than the NATS server's max_payload")
            continue
        except (BusUnavailableError, nats.errors.Error, KeysUnavailableError) as error:
            return published, error  # keep the order: the rest waits for this one
        await conn.execute(
            "UPDATE outbox SET published_at = now(), set_aside_at = NULL, set_aside_reason = NULL"
            " WHERE position = $1",
            row["position"],
        )
        published += 1
    return published, None


async def _set_aside(conn: Connection, row: asyncpg.Record, reason: str) -> None:
    await conn.execute(
        "UPDATE outbox SET set_aside_at = coalesce(set_aside_at, now()), set_aside_reason = $2"
        " WHERE position = $1",
        row["position"],
        reason,
    )
    if row["set_aside_at"] is None:
        OUTBOX_SET_ASIDE.inc()
        log.error(
            "outbox row %d (event %s) set aside, the relay goes on without it: %s;"
            " see 'mediai streams'",
            row["position"],
            row["event_id"],
            reason,
        )


async def run_outbox_relay(pool: asyncpg.Pool, bus: Bus, *, interval: float = 1.0) -> None:
    """Relay forever (until cancelled); a NATS outage only delays events, never loses them.
    The first round that gets the lock also retries the set-aside rows."""
    retry_set_aside = True
    while True:
        try:
            if await relay_outbox(pool, bus, retry_set_aside=retry_set_aside) is not None:
                retry_set_aside = False
        except (
            BusUnavailableError,
            nats.errors.Error,
            OSError,
            asyncpg.PostgresError,
            KeysUnavailableError,  # a row written before encryption is sealed on its way out
        ) as error:
            log.warning("outbox relay paused: %s", type(error).__name__)
        await asyncio.sleep(interval)


@dataclass(frozen=True)
class SetAsideRow:
    position: int
    event_id: str
    created_at: datetime
    set_aside_at: datetime
    reason: str


@dataclass(frozen=True)
class OutboxState:
    pending: int
    set_aside_count: int
    set_aside: list[SetAsideRow]  # the oldest few


async def outbox_state(pool: asyncpg.Pool, *, limit: int = 20) -> OutboxState:
    """How many rows wait to be published, how many are set aside, and the oldest of those."""
    counts = await pool.fetchrow(
        "SELECT count(*) FILTER (WHERE set_aside_at IS NULL) AS pending,"
        " count(*) FILTER (WHERE set_aside_at IS NOT NULL) AS set_aside"
        " FROM outbox WHERE published_at IS NULL"
    )
    assert counts is not None  # an aggregate always returns a row
    rows = await pool.fetch(
        "SELECT position, event_id, created_at, set_aside_at, set_aside_reason FROM outbox"
        " WHERE published_at IS NULL AND set_aside_at IS NOT NULL ORDER BY position LIMIT $1",
        limit,
    )
    return OutboxState(
        pending=counts["pending"],
        set_aside_count=counts["set_aside"],
        set_aside=[
            SetAsideRow(
                position=r["position"],
                event_id=r["event_id"],
                created_at=r["created_at"],
                set_aside_at=r["set_aside_at"],
                reason=r["set_aside_reason"],
            )
            for r in rows
        ],
    )
