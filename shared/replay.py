"""Reading the business stream from its start (or a time) to its end, for replays: billing's
audits and rebuilds, the rooms read model's rebuild.

An ordered, ephemeral consumer of every version of the given event types (optionally one
tenant's subjects only), up to the last sequence the stream had when the read began: flow
control and gap detection that resumes at the right sequence mean a slow handler delays the
read but never loses a message, and the server removes the consumer if the reader dies.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime

from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from shared import subjects
from shared.bus import Bus
from shared.events import EVENTS_STREAM, Event


class ReplayError(Exception):
    """The stream could not be read to the end (NATS unavailable or not answering)."""


async def read_stream(
    bus: Bus,
    event_types: Iterable[type[Event]],
    handle: Callable[[int, bytes], Awaitable[None]],
    *,
    tenant: str | None = None,
    start_time: datetime | None = None,
    stall_timeout: float = 60.0,
) -> int:
    """Call ``handle(stream sequence, payload)`` for each event of ``event_types`` (any
    version), oldest first, up to the stream's last sequence at the start; returns that
    sequence."""
    stream = subjects.stream_name(EVENTS_STREAM)
    end: int = (await bus.js.stream_info(stream)).state.last_seq
    if end == 0:
        return 0
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    progress = 0

    async def on_message(message: Msg) -> None:
        nonlocal progress
        if done.done():
            return
        try:
            metadata = message.metadata
            sequence = metadata.sequence.stream
            if sequence > end:
                done.set_result(None)
                return
            progress += 1
            await handle(sequence, message.data)
            if sequence >= end or metadata.num_pending == 0:
                done.set_result(None)
        except Exception as error:  # noqa: BLE001 - handed to the caller, never swallowed
            done.set_exception(error)

    filters = [subjects.any_version_filter(t, tenant) for t in event_types]
    first = 1
    if start_time is not None:
        found = await _first_sequence_since(bus, stream, filters, start_time)
        if found is None or found > end:
            return end  # nothing stored since start_time matches
        first = found
    config = ConsumerConfig(
        filter_subjects=filters,
        # A start sequence rather than a start time: the ordered consumer resumes after a gap
        # by sequence, and the server refuses a start time and a start sequence together.
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=first,
        # Ephemeral: the server removes it by itself if this process dies mid-replay.
        inactive_threshold=120.0,
    )
    subscription = await bus.js.subscribe(
        filters[0],
        stream=stream,
        cb=on_message,
        config=config,
        ordered_consumer=True,
        idle_heartbeat=2.0,
    )
    try:
        info = await subscription.consumer_info()
        delivered = info.delivered.stream_seq if info.delivered else 0
        if info.num_pending == 0 and not delivered:
            return end  # nothing matches
        seen = -1
        while not done.done():
            try:
                await asyncio.wait_for(asyncio.shield(done), timeout=stall_timeout)
            except TimeoutError:
                if progress == seen:
                    raise ReplayError("the stream stopped delivering before its end") from None
                seen = progress
        done.result()
        return end
    finally:
        await subscription.unsubscribe()


async def _first_sequence_since(
    bus: Bus, stream: str, filters: list[str], start_time: datetime
) -> int | None:
    """The sequence of the first message matching ``filters`` stored at or after
    ``start_time``, or None."""
    name = f"billing-seek-{secrets.token_hex(6)}"
    await bus.js.add_consumer(
        stream,
        ConsumerConfig(
            name=name,
            filter_subjects=filters,
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=start_time,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=30.0,
            mem_storage=True,
            num_replicas=1,
        ),
    )
    subscription = await bus.js.pull_subscribe_bind(consumer=name, stream=stream)
    try:
        if (await subscription.consumer_info()).num_pending == 0:
            return None
        [message] = await subscription.fetch(1, timeout=5.0)
        sequence: int = message.metadata.sequence.stream
        return sequence
    finally:
        # Not deleted: billing's NATS user may not delete consumers (it could delete others');
        # the server removes this one once it has been inactive for its threshold.
        await subscription.unsubscribe()
