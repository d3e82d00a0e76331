"""Pruning what the bus no longer needs: published outbox rows and consumer inbox rows.

- A published outbox row is needed only while a relay might publish it again (it crashed
  between publishing and marking the row); JetStream drops such a duplicate inside its window.
  Rows are kept for the window plus a margin.
- A consumer inbox row tells a consumer it already applied an event. A dead letter can be
  replayed for as long as the dead-letter stream keeps it, and the consumer it is replayed for
  may have applied the event meanwhile (an earlier replay of it, or another delivery): inbox
  rows are kept for the dead-letter retention plus a margin, so the replay is still recognised.

Rows set aside by the outbox relay are never pruned: they wait for an operator. Every service
runs ``BUS_PRUNER`` among its background tasks; a round runs under its lease (``shared.leases``),
so two processes never prune at once, and deletes a bounded number of rows in batches
(each statement well inside the statement timeout); the rest goes next round.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared import leases
from shared.background import every
from shared.config import Settings
from shared.db import Connection
from shared.streams import DUPLICATE_WINDOW_SECONDS

log = logging.getLogger(__name__)

PRUNE_INTERVAL_SECONDS = 600.0
OUTBOX_MARGIN_SECONDS = 3600.0
INBOX_MARGIN_SECONDS = 86400.0
_BATCH = 10_000
_BATCHES_PER_ROUND = 10


def outbox_keep_seconds() -> float:
    return DUPLICATE_WINDOW_SECONDS + OUTBOX_MARGIN_SECONDS


def inbox_keep_seconds(settings: Settings) -> float:
    return settings.deadletter_retention + INBOX_MARGIN_SECONDS


@dataclass(frozen=True)
class Pruned:
    outbox: int
    inbox: int


async def prune_bus_records(pool: asyncpg.Pool, settings: Settings) -> Pruned | None:
    """Delete published outbox rows and inbox rows past their keep time; None when another
    process is pruning right now."""
    async with pool.acquire() as conn, conn.transaction():
        if not await leases.take(conn, leases.BUS_PRUNER):
            return None
        outbox = await _delete_in_batches(
            conn,
            "DELETE FROM outbox WHERE position IN (SELECT position FROM outbox"
            " WHERE published_at < now() - make_interval(secs => $1) LIMIT $2)",
            outbox_keep_seconds(),
        )
        inbox = await _delete_in_batches(
            conn,
            "DELETE FROM consumer_inbox WHERE (consumer, event_id) IN"
            " (SELECT consumer, event_id FROM consumer_inbox"
            " WHERE processed_at < now() - make_interval(secs => $1) LIMIT $2)",
            inbox_keep_seconds(settings),
        )
    if outbox or inbox:
        log.info("pruned %d published outbox rows and %d consumer inbox rows", outbox, inbox)
    return Pruned(outbox=outbox, inbox=inbox)


async def _delete_in_batches(conn: Connection, delete: str, keep_seconds: float) -> int:
    deleted = 0
    for _ in range(_BATCHES_PER_ROUND):
        status = await conn.execute(delete, keep_seconds, _BATCH)
        count = int(status.rsplit(" ", 1)[1])  # "DELETE <n>"
        deleted += count
        if count < _BATCH:
            break
    return deleted


async def _prune(app: Any) -> None:
    await prune_bus_records(app.state.pool, app.state.settings)


BUS_PRUNER = every("bus-pruner", PRUNE_INTERVAL_SECONDS, _prune)
