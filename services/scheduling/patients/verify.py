"""Verifying the access log: the chain itself (``shared.access.verify_chain``: an edited entry, a
removed one), its length against the reads on the event log (entries removed from its end), and,
for the CLI, every entry against the event it was made from (a chain rewritten from some entry
on, hashes and all)."""

from __future__ import annotations

import asyncio

import asyncpg
import msgspec
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from services.scheduling.patients import store
from services.scheduling.patients.consumers import ACCESS_LOG
from shared import subjects
from shared.access import Entry, Problem, chained, verify_chain
from shared.bus import Bus
from shared.events import CODEC
from shared.events.patients import PersonalDataRead


class Verification(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """``intact``: no problem found. ``entries``: the chain's length; ``readsOnLog``: the reads
    the event log holds for the tenant; ``pending``: reads the access-log consumer has not
    folded yet (any tenant's), so a shorter chain is not yet a removal."""

    tenant: str
    intact: bool
    entries: int
    reads_on_log: int
    pending: int
    problems: list[Problem]


async def _reads_on_log(bus: Bus, tenant: str) -> int:
    stream = subjects.stream_name(PersonalDataRead.STREAM)
    info = await bus.js.stream_info(
        stream, subjects_filter=subjects.type_filter(PersonalDataRead, tenant)
    )
    return sum((info.state.subjects or {}).values())


async def _pending(bus: Bus) -> int:
    info = await bus.js.consumer_info(ACCESS_LOG.stream, ACCESS_LOG.durable)
    return int(info.num_pending or 0) + int(info.num_ack_pending or 0)


async def verify_tenant(pool: asyncpg.Pool, bus: Bus, tenant: str) -> Verification:
    """Check one tenant's chain, and its length against the event log."""
    entries = await store.entries(pool, tenant)
    problems = verify_chain(entries)
    reads, pending = await _reads_on_log(bus, tenant), await _pending(bus)
    last = entries[-1].position if entries else 0
    if pending == 0 and reads > last:  # the newest entries are gone: no gap shows it
        problems.append(Problem(position=last + 1, problem="removed"))
    return Verification(
        tenant=tenant,
        intact=not problems,
        entries=len(entries),
        reads_on_log=reads,
        pending=pending,
        problems=problems,
    )


async def reads_of(
    bus: Bus, tenant: str, expected: int, timeout: float = 60.0
) -> dict[str, PersonalDataRead]:
    """Every read the event log holds for the tenant, by event id."""
    found: dict[str, PersonalDataRead] = {}
    if expected == 0:
        return found
    done = asyncio.Event()

    async def on_message(message: Msg) -> None:
        event = CODEC.decode(message.data)
        if isinstance(event.data, PersonalDataRead):
            found[event.id] = event.data
        if len(found) >= expected:
            done.set()

    subscription = await bus.js.subscribe(
        subjects.type_filter(PersonalDataRead, tenant),
        cb=on_message,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    try:
        await asyncio.wait_for(done.wait(), timeout)
    finally:
        await subscription.unsubscribe()
    return found


def against_log(entries: list[Entry], reads: dict[str, PersonalDataRead]) -> list[Problem]:
    """Entries whose content is not the read they were made from (rebuilt with its own link, so
    only the content is compared), entries no read on the log backs, and reads with no entry
    (position 0: where they were is gone with them)."""
    problems = [
        Problem(position=0, problem=f"removed: the read {event_id} of the event log has no entry")
        for event_id in sorted(set(reads) - {entry.event_id for entry in entries})
    ]
    for entry in entries:
        read = reads.get(entry.event_id)
        if read is None:
            problems.append(Problem(position=entry.position, problem="not on the event log"))
            continue
        previous = msgspec.structs.replace(
            entry, position=entry.position - 1, hash=entry.previous_hash
        )
        expected = chained(previous if entry.position > 1 else None, entry.event_id, read)
        if expected != entry:
            problems.append(Problem(position=entry.position, problem="differs from the event log"))
    return problems
