"""The live usage projection: a durable consumer of every usage-bearing event."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from zoneinfo import ZoneInfo

import asyncpg

from services.billing import store
from services.billing.metering import InvalidUsageError, interval_ids, meter_event
from services.billing.meters import DEFAULT, METERED_EVENTS, Catalogue
from shared.bus import ConsumerSpec, Delivery, PoisonMessageError
from shared.db import projection
from shared.events import Envelope

# Only business-stream events: billing never reads the PHI stream.
USAGE_PROJECTION = ConsumerSpec(
    durable=store.CONSUMER,
    events=METERED_EVENTS,
    # Projecting one event takes milliseconds; a short ack wait brings the messages of a killed
    # consumer back quickly (a rebuild that holds the projection lock only causes redeliveries,
    # which the inbox absorbs).
    ack_wait=10.0,
)


def usage_handler(
    pool: asyncpg.Pool, zone: ZoneInfo, catalogue: Catalogue = DEFAULT
) -> Callable[[Envelope, Delivery], Awaitable[None]]:
    """The handler of ``USAGE_PROJECTION``: meter the event and write it in one transaction
    with its inbox record, so a redelivered or duplicated event counts once."""

    async def handle(event: Envelope, delivery: Delivery) -> None:
        ids = interval_ids(catalogue, event)
        async with store.projection_turn(pool), projection(pool, delivery, event.id) as conn:
            if conn is None:
                return
            intervals = await store.load_intervals(conn, ids)
            try:
                metered = meter_event(catalogue, event, delivery.stream_sequence, intervals)
            except InvalidUsageError as error:
                raise PoisonMessageError(str(error)) from None
            await store.project(conn, metered.deltas, metered.intervals, zone)

    return handle
