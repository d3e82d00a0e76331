"""The dispatcher's view of billing's usage caps: a projection of the 100% notices."""

from __future__ import annotations

import asyncpg
from litestar import Litestar

from services.dispatcher import core, store
from shared.consumer import Consumer, ConsumerSpec, Delivery
from shared.db import projection
from shared.events import Envelope
from shared.events.billing import UsageLimitCleared, UsageLimitReached


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


# Services never call each other's HTTP APIs: billing announces caps reached and cleared, and
# the dispatcher keeps what it needs to refuse a dispatch without asking anyone.
USAGE_LIMITS: ConsumerSpec[asyncpg.Pool] = ConsumerSpec(
    durable="dispatcher-usage-limits",
    handlers={UsageLimitReached: apply, UsageLimitCleared: apply},
)


async def project_usage_limits(app: Litestar) -> None:
    """The consumer, for the app's lifetime (a background of the app)."""
    await Consumer(app.state.bus, USAGE_LIMITS, app.state.pool).run()
