"""The timeline's projection: two durable consumers (one per stream: the business log and the
PHI stream), each event folded once (services/sessions/core.py) in one transaction with its
inbox record."""

from __future__ import annotations

import asyncpg
from litestar import Litestar

from services.sessions import core, store
from shared.consumer import Consumer, ConsumerSpec, Delivery
from shared.db import projection
from shared.events import EVENTS_STREAM, PHI_STREAM, Envelope


async def project(pool: asyncpg.Pool, event: Envelope, delivery: Delivery) -> None:
    async with projection(pool, delivery, event.id) as conn:
        if conn is not None:
            await store.apply(conn, event.tenant, core.fold(event))


TIMELINE: ConsumerSpec[asyncpg.Pool] = ConsumerSpec(
    durable="sessions-timeline",
    handlers={kind: project for kind in core.FOLDS if kind.STREAM == EVENTS_STREAM},
)
TIMELINE_PHI: ConsumerSpec[asyncpg.Pool] = ConsumerSpec(
    durable="sessions-timeline-phi",
    handlers={kind: project for kind in core.FOLDS if kind.STREAM == PHI_STREAM},
)


async def run_timeline(app: Litestar) -> None:
    await Consumer(app.state.bus, TIMELINE, app.state.pool).run()


async def run_timeline_phi(app: Litestar) -> None:
    await Consumer(app.state.bus, TIMELINE_PHI, app.state.pool).run()


async def forget_personal(app: Litestar) -> None:
    """Personal parts live here no longer than on the PHI stream (``MEDIAI_PHI_RETENTION``)."""
    await app.state.pool.execute(
        "UPDATE timeline_entries SET personal = NULL"
        " WHERE personal IS NOT NULL AND at < now() - make_interval(secs => $1)",
        float(app.state.settings.phi_retention),
    )
