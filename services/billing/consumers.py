"""The live usage projection: a durable consumer of every usage-bearing event."""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo

import asyncpg

from services.billing import store
from services.billing.metering import InvalidUsageError, interval_ids, meter_event
from services.billing.meters import DEFAULT, METERED_EVENTS, Catalogue
from shared.consumer import ConsumerSpec, Delivery
from shared.db import projection
from shared.events import Envelope
from shared.failures import PoisonMessageError


@dataclass(frozen=True)
class UsageProjector:
    """What the usage projection needs: the database, the billing time zone, the meters."""

    pool: asyncpg.Pool
    zone: ZoneInfo
    catalogue: Catalogue = DEFAULT


async def project_usage(projector: UsageProjector, event: Envelope, delivery: Delivery) -> None:
    """Meter the event and write it in one transaction with its inbox record, so a redelivered
    or duplicated event counts once."""
    ids = interval_ids(projector.catalogue, event)
    pool = projector.pool
    async with store.projection_turn(pool), projection(pool, delivery, event.id) as conn:
        if conn is None:
            return
        intervals = await store.load_intervals(conn, ids)
        try:
            metered = meter_event(projector.catalogue, event, delivery.stream_sequence, intervals)
        except InvalidUsageError as error:
            raise PoisonMessageError(str(error)) from None
        await store.project(conn, metered.deltas, metered.intervals, projector.zone)


# Only business-stream events: billing never reads the PHI stream.
USAGE_PROJECTION: ConsumerSpec[UsageProjector] = ConsumerSpec(
    durable=store.CONSUMER,
    handlers=dict.fromkeys(METERED_EVENTS, project_usage),
    # Projecting one event takes milliseconds; a short ack wait brings the messages of a killed
    # consumer back quickly (a rebuild that holds the projection lock only causes redeliveries,
    # which the inbox absorbs).
    ack_wait=10.0,
    # Throughput over latency: usage may show a second late, a rebuild-sized backlog drains fast.
    batch=64,
)
