"""Leases: the one way replicas of a service elect who runs a job that must not run twice at once.

A lease is a PostgreSQL advisory lock held for one turn of a job, in a transaction on a
connection of its own: ``async with lease(pool, OUTBOX_RELAY) as held``. Every replica runs the
job's loop; on each turn one takes the lease and works, the others see it held and skip the turn
(or, with ``wait=True``, queue behind it). Why this and not a leader elected for life, or a lease
in JetStream KV:

- The server releases a transaction lock when its transaction ends or its holder dies (a killed
  process, a dropped connection), at once: no time-to-live to tune, no hand-over, no heartbeat,
  and no window where two holders both believe they lead.
- The jobs it guards write to PostgreSQL (outbox rows, read models, keys); a lease in the same
  database cannot disagree with the data it protects. A JetStream KV lease needs a TTL and
  heartbeats, and a replica cut from NATS but not from PostgreSQL would keep writing after its
  lease expired.
- It works through a transaction-pooling proxy (PgBouncer, Neon), which session locks do not.

Every lease has its fixed key here, one table for the whole system (the migration runner's lock,
``shared.db``, is the other advisory lock key: 0x6D65646961).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from shared.background import Run
from shared.db import Connection


@dataclass(frozen=True)
class Lease:
    """A named advisory lock key: at most one holder at a time across every process. A scoped
    lease (one per event source, say) is ``key`` with the scope's hash, PostgreSQL's two-int
    lock form, so ``key`` fits 32 bits."""

    name: str
    key: int
    scoped: bool = False


# The relay (one per event source: each service relays its own rows) and the pruner keep the
# keys they had before leases had a module, so a rolling upgrade never has an old and a new
# relay publishing at once.
OUTBOX_RELAY = Lease("outbox-relay", 0x72656C61, scoped=True)  # "rela"
BUS_PRUNER = Lease("bus-pruner", 0x6D656469610002)
IDEMPOTENCY_PRUNER = Lease("idempotency-key-pruner", 0x6D656469610003)
ROOMS_RECONCILER = Lease("rooms-reconciler", 0x726F6F6D73)
DISPATCH_DEADLINES = Lease("dispatch-deadline-sweeper", 0x6D656469610004)
LOST_AGENTS = Lease("lost-agent-sweeper", 0x6D656469610005)
INVOICE_SCHEDULE = Lease("invoice-schedule", 0x6D656469610006)
CLINICAL_RETENTION = Lease("clinical-retention", 0x6D656469610007)

ALL = (
    OUTBOX_RELAY,
    BUS_PRUNER,
    IDEMPOTENCY_PRUNER,
    ROOMS_RECONCILER,
    DISPATCH_DEADLINES,
    LOST_AGENTS,
    INVOICE_SCHEDULE,
    CLINICAL_RETENTION,
)


async def take(
    conn: Connection, held: Lease, *, scope: str | None = None, wait: bool = False
) -> bool:
    """Take ``held`` (for ``scope``, if it is scoped) for the rest of ``conn``'s transaction
    (which must be open); False when another holds it (with ``wait``, wait for it instead)."""
    if held.scoped != (scope is not None):
        raise ValueError(f"lease {held.name} {'needs' if held.scoped else 'takes no'} scope")
    arguments, values = (
        ("$1", [held.key]) if scope is None else ("$1, hashtext($2)", [held.key, scope])
    )
    if wait:
        await conn.execute(f"SELECT pg_advisory_xact_lock({arguments})", *values)
        return True
    return bool(await conn.fetchval(f"SELECT pg_try_advisory_xact_lock({arguments})", *values))


@contextlib.asynccontextmanager
async def lease(pool: asyncpg.Pool, held: Lease, *, wait: bool = False) -> AsyncIterator[bool]:
    """Hold ``held`` for the body on a connection of its own (the body uses the pool as usual);
    yields whether it is held. It ends with the body, or with this process."""
    async with pool.acquire() as conn, conn.transaction():
        yield await take(conn, held, wait=wait)


def elected(held: Lease, job: Run) -> Run:
    """``job`` run only by the replica holding ``held`` for this turn; the others skip it."""

    async def turn(app: Any) -> None:
        async with lease(app.state.pool, held) as mine:
            if mine:
                await job(app)

    return turn
