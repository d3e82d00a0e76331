"""A replay split across processes gives exactly what one sequential replay gives."""

from __future__ import annotations

from typing import Any

import asyncpg

from services.billing.fold import Staging, fold_range
from services.billing.meters import DEFAULT
from services.billing.parallel import replay
from services.billing.projector import Projector
from services.billing.replay import summed
from shared.bus import Bus
from shared.config import Settings
from tests import billing_script as script
from tests.billing_support import new_tenant, publish


async def _replayed(
    pool: asyncpg.Pool,
    bus: Bus,
    settings: Settings,
    tenant: str,
    first: int,
    last: int,
    processes: int,
) -> tuple[Projector, list[Any]]:
    """The projector after the replay and the summed rows it staged."""
    projector = Projector(DEFAULT, keep_inbox=True)
    async with pool.acquire() as conn, Staging(conn) as staging:
        if processes > 1:
            await replay(settings, projector, staging, tenant, first, last, processes)
        else:
            await fold_range(bus, projector, staging, tenant, first, last)
        await staging.write(projector.take_rows())
        rows = await conn.fetch(summed(staging, "$1", in_key_order=True), DEFAULT.max_meters)
    return projector, [tuple(row) for row in rows]


async def test_a_replay_split_across_processes_equals_the_sequential_one(
    bus: Bus, pool: asyncpg.Pool, settings: Settings
) -> None:
    tenant, _ = await new_tenant(pool)
    events = script.envelopes(tenant)
    # Dead letters replayed at the end, each with its event id at a new sequence: a usage report
    # (folded in the first part, seen again in the last) and the patient's join (an interval).
    usage, patient_joined = events[3], events[0]
    sequences = await publish(bus, [*events, usage, patient_joined])
    first, last = sequences[0], sequences[-1]

    sequential, sequential_rows = await _replayed(pool, bus, settings, tenant, first, last, 1)
    split, split_rows = await _replayed(pool, bus, settings, tenant, first, last, 3)

    assert split_rows == sequential_rows
    assert split.stats == sequential.stats
    assert split.stats.applied == len(events) and split.stats.duplicates == 2
    assert split.intervals == sequential.intervals
    assert sorted(split.inbox or ()) == sorted(sequential.inbox or ())
    totals: dict[str, int] = {}
    for row in split_rows:
        totals[row[2]] = totals.get(row[2], 0) + row[5]
    assert {m: q for m, q in totals.items() if q} == script.TOTALS
