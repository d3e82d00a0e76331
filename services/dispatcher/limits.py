"""The dispatcher's view of billing's usage caps: a projection of the 100% notices."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import asyncpg
from litestar import Litestar

from services.dispatcher import core, store
from shared.bus import Consumer, ConsumerSpec, Delivery
from shared.db import projection
from shared.events import Envelope
from shared.events.billing import UsageLimitCleared, UsageLimitReached

# Services never call each other's HTTP APIs: billing announces caps reached and cleared, and
# the dispatcher keeps what it needs to refuse a dispatch without asking anyone.
USAGE_LIMITS = ConsumerSpec(
    durable="dispatcher-usage-limits",
    events=(UsageLimitReached, UsageLimitCleared),
)


async def apply(pool: asyncpg.Pool, event: Envelope, delivery: Delivery) -> None:
    """Apply one limit event, once; 80% notices are skipped (they never refuse a dispatch)."""
    notice = core.limit_notice(event)
    if notice is None:
        return
    async with projection(pool, delivery, event.id) as conn:
        if conn is None:
            return
        current = await store.load_usage_limit(
            conn, notice.tenant_id, notice.meter, notice.period_start
        )
        after = core.evolve_limit(current, notice)
        if after != current:
            await store.save_usage_limit(conn, after)


def project_usage_limits(app: Litestar) -> Coroutine[Any, Any, None]:
    """The consumer, for the app's lifetime (a background of the app)."""
    pool: asyncpg.Pool = app.state.pool

    async def handle(event: Envelope, delivery: Delivery) -> None:
        await apply(pool, event, delivery)

    # batch=1: a lone message must not wait for a batch to fill (see shared.bus.Consumer).
    return Consumer(app.state.bus, USAGE_LIMITS, handle, batch=1).run()
