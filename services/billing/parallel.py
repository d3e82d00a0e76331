"""A long replay split across processes by stream sequence ranges, merged to the same result
as one process reading the whole range.

Each part (a process of its own: folding is Python, one core each) reads its range, folds the
events that do not change an interval and writes its rows to the run's staging table, where
rows are summed per key at the end anyway (sums add up, ``max`` meters keep the largest,
first/last sequences take the least/greatest). Events that change an interval (a
participant's stay, a recording) depend on the order they are seen in, so a part hands them
back unfolded and this process folds them all in stream order: they are a few percent of a
stream. Each part counts an event id once; a part whose applied ids were already applied by an
earlier part (a replayed dead letter carries its event id at a new sequence) is replayed again
with those ids counted as already seen, which is exactly what one sequential reader would
have known when it got there.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import msgspec

from services.billing.fold import Staging, fold, fold_range
from services.billing.meters import Catalogue
from services.billing.periods import Period
from services.billing.projector import Projector, ReplayStats
from shared.bus import connect_bus
from shared.config import Settings
from shared.db import create_pool
from shared.events import CODEC

# Below this many sequences, starting processes (~1 s each, importing the code) costs more
# than it saves.
SPLIT_FROM = 200_000
MAX_PROCESSES = 8


class Part(msgspec.Struct, frozen=True, kw_only=True):
    number: int  # from 1; 0 is the merging process's own rows
    first: int
    last: int
    tenant: str | None
    staging: str
    catalogue: Catalogue
    period: Period | None
    already_seen: list[str] = []


class PartResult(msgspec.Struct, kw_only=True):
    stats: ReplayStats
    applied: list[tuple[str, int]]  # (event id, sequence) of each event applied
    deferred: list[tuple[int, bytes]]  # (sequence, payload) of the interval events, unfolded


def processes_for(first: int, last: int) -> int:
    """How many processes a replay of ``first``..``last`` pays for on this machine."""
    if last - first + 1 < SPLIT_FROM:
        return 1
    return max(1, min(os.cpu_count() or 1, MAX_PROCESSES))


def ranges(first: int, last: int, count: int) -> list[tuple[int, int]]:
    """``first``..``last`` cut into ``count`` consecutive ranges of (nearly) equal length."""
    size, extra = divmod(last - first + 1, count)
    found, start = [], first
    for index in range(count):
        end = start + size + (1 if index < extra else 0) - 1
        found.append((start, end))
        start = end + 1
    return [r for r in found if r[0] <= r[1]]


async def replay(
    settings: Settings,
    projector: Projector,
    staging: Staging,
    tenant: str | None,
    first: int,
    last: int,
    processes: int,
) -> None:
    """Fold ``first``..``last`` into ``projector`` and ``staging`` with ``processes`` parts."""
    parts = [
        Part(
            number=number,
            first=start,
            last=end,
            tenant=tenant,
            staging=staging.name,
            catalogue=projector.catalogue,
            period=projector.period,
        )
        for number, (start, end) in enumerate(ranges(first, last, processes), start=1)
    ]
    loop = asyncio.get_running_loop()
    context = multiprocessing.get_context("spawn")  # no forked copies of this event loop
    with ProcessPoolExecutor(len(parts), mp_context=context) as pool:
        results = list(
            await asyncio.gather(
                *(loop.run_in_executor(pool, run_part, settings, part) for part in parts)
            )
        )
        applied_before: set[str] = set()
        for index, part in enumerate(parts):
            ids = {event_id for event_id, _ in results[index].applied}
            again = ids & applied_before
            applied_before |= ids
            if again:
                await staging.forget(part.number)
                part = msgspec.structs.replace(part, already_seen=sorted(again))
                results[index] = await loop.run_in_executor(pool, run_part, settings, part)
    _merge(projector, results)


def _merge(projector: Projector, results: list[PartResult]) -> None:
    for result in results:
        fold(projector, result.deferred, CODEC, frozenset(), None)
    stats = projector.stats
    for result in results:
        part = result.stats
        stats.events += part.events
        stats.applied += part.applied
        stats.duplicates += part.duplicates
        stats.rejected += part.rejected
        stats.undecodable += part.undecodable
        firsts = [s for s in (stats.first_sequence, part.first_sequence) if s]
        stats.first_sequence = min(firsts, default=0)
        stats.last_sequence = max(stats.last_sequence, part.last_sequence)
        if projector.inbox is not None:
            projector.inbox += result.applied


def run_part(settings: Settings, part: Part) -> PartResult:
    """One part, in a process of its own."""
    return asyncio.run(_run_part(settings, part))


async def _run_part(settings: Settings, part: Part) -> PartResult:
    bus = await connect_bus(settings, "billing-replay", streams="skip")
    pool = await create_pool(settings, max_size=2, statement_timeout=None)
    try:
        projector = Projector(part.catalogue, period=part.period, keep_inbox=True)
        projector.seen.update(part.already_seen)
        deferred: list[tuple[int, bytes]] = []
        async with pool.acquire() as conn:
            staging = await Staging(conn, part.staging, part.number).as_part()
            await fold_range(
                bus, projector, staging, part.tenant, part.first, part.last, deferred=deferred
            )
            await staging.write(projector.take_rows())
        assert projector.inbox is not None
        return PartResult(stats=projector.stats, applied=projector.inbox, deferred=deferred)
    finally:
        await pool.close()
        await bus.nc.close()
