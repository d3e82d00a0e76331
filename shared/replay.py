"""Reading the business stream in bulk, for replays: billing's audits and rebuilds, the rooms
read model's rebuild.

An ephemeral pull consumer of every version of the given event types (optionally one tenant's
subjects only), from a start sequence up to an end sequence (by default the stream's last when
the read began), read in large batches: each batch is one pull request, its frames go straight
from the client's parser into a list (``shared.natsbulk``, no message object per event), and
the next batch is requested before the current one is handed over, so the server sends while
the reader folds. No acknowledgements (the consumer acknowledges nothing), and the server
removes the consumer by itself once the reader stops pulling (ended or dead).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import datetime

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from shared import subjects
from shared.bus import Bus
from shared.events import EVENTS_STREAM, Event

BATCH = 4096  # messages per pull request
# How long one pull waits for its batch on the server: a full batch ends it sooner.
PULL_EXPIRES = 5.0

Batch = list[tuple[int, bytes]]  # (stream sequence, payload), in stream order


class ReplayError(Exception):
    """The stream could not be read to the end (NATS unavailable or not answering)."""


def replay_filters(event_types: Iterable[type[Event]], tenant: str | None = None) -> list[str]:
    """The subject filters of every version of ``event_types`` (of one tenant, if given)."""
    return [subjects.any_version_filter(t, tenant) for t in event_types]


async def stream_end(bus: Bus) -> int:
    """The last sequence of the business stream now (0 when it is empty)."""
    last: int = (await bus.js.stream_info(subjects.stream_name(EVENTS_STREAM))).state.last_seq
    return last


async def first_sequence(
    bus: Bus, filters: list[str], start_time: datetime | None, end: int
) -> int | None:
    """Where a replay from ``start_time`` starts (1 without one), or None when nothing matching
    was stored since then, up to ``end``."""
    if start_time is None:
        return 1
    found = await _first_sequence_since(
        bus, subjects.stream_name(EVENTS_STREAM), filters, start_time
    )
    return None if found is None or found > end else found


async def read_batches(
    bus: Bus,
    event_types: Iterable[type[Event]],
    *,
    first: int,
    last: int,
    tenant: str | None = None,
    batch: int = BATCH,
    stall_timeout: float = 60.0,
) -> AsyncIterator[Batch]:
    """The events of ``event_types`` (any version; of one tenant, if given) with sequences
    ``first``..``last``, oldest first, in batches of at most ``batch``."""
    if first > last:
        return
    stream = subjects.stream_name(EVENTS_STREAM)
    info = await bus.js.add_consumer(
        stream,
        ConsumerConfig(
            # One filter, the types picked here: see subjects.stream_filter.
            filter_subject=subjects.stream_filter(EVENTS_STREAM, tenant),
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=first,
            ack_policy=AckPolicy.NONE,
            # Ephemeral: the server removes it once no pull has been waiting for this long.
            inactive_threshold=60.0,
            mem_storage=True,
            num_replicas=1,
        ),
    )
    if info.num_pending == 0:
        return
    wanted = {subjects.unversioned_type_of(t) for t in event_types}
    pulls = _Pulls(bus, stream, info.name, batch, wanted)
    await pulls.start()
    try:
        await pulls.request()
        while True:
            frames, final_sequence, done = await pulls.wait(stall_timeout)
            if not done:
                await pulls.request()  # the server sends while the caller folds this batch
            # Frames come in stream order: only a batch running past ``last`` needs cutting.
            found = frames if final_sequence <= last else [f for f in frames if f[0] <= last]
            if found:
                yield found
            if done or final_sequence >= last:
                return
    finally:
        await pulls.stop()


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
    event_types = list(event_types)
    end = await stream_end(bus)
    filters = replay_filters(event_types, tenant)
    first = await first_sequence(bus, filters, start_time, end) if end else None
    if first is None:
        return end
    async for found in read_batches(
        bus, event_types, first=first, last=end, tenant=tenant, stall_timeout=stall_timeout
    ):
        for sequence, payload in found:
            await handle(sequence, payload)
    return end


def _ack_tokens(reply: bytes) -> tuple[int, int]:
    """The stream sequence and the consumer's pending count in a message's reply subject:
    ``$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>``
    (servers with domains add two tokens after ``ACK`` and one at the end)."""
    tokens = reply.split(b".")
    offset = 0 if len(tokens) == 9 else 2
    return int(tokens[5 + offset]), int(tokens[8 + offset])


class _Pulls:
    """One pull request at a time on an inbox whose frames go into a list."""

    def __init__(
        self, bus: Bus, stream: str, consumer: str, batch: int, wanted: set[bytes]
    ) -> None:
        self.bus, self.stream, self.consumer, self.batch = bus, stream, consumer, batch
        self.wanted = wanted
        self.inbox = bus.nc.new_inbox()
        self.received: Batch = []
        self.count = 0
        self.final_sequence = 0
        self.ended: asyncio.Future[bool] | None = None
        self.sid = 0

    async def start(self) -> None:
        self.sid = await self.bus.nc.subscribe_frames(self.inbox, self._on_frame)

    async def stop(self) -> None:
        # The consumer is not deleted: billing's NATS user may not delete consumers (it could
        # delete others'); the server removes it once inactive for its threshold.
        await self.bus.nc.unsubscribe_frames(self.sid)

    async def request(self) -> None:
        self.ended = asyncio.get_running_loop().create_future()
        self.received, self.count, self.final_sequence = [], 0, 0
        expires = int(PULL_EXPIRES * 1e9)
        await self.bus.nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.consumer}",
            json.dumps({"batch": self.batch, "expires": expires}).encode(),
            reply=self.inbox,
        )

    async def wait(self, timeout: float) -> tuple[Batch, int, bool]:
        """This pull's wanted messages, the sequence of its last message, and whether the
        consumer has nothing more."""
        assert self.ended is not None
        try:
            done = await asyncio.wait_for(asyncio.shield(self.ended), timeout)
        except TimeoutError:
            raise ReplayError("the stream stopped delivering before its end") from None
        return self.received, self.final_sequence, done

    def _on_frame(self, subject: bytes, reply: bytes, payload: bytes, headers: bytes) -> None:
        ended = self.ended
        if ended is None or ended.done():
            return
        if reply:
            sequence, pending = _ack_tokens(reply)
            self.count += 1
            self.final_sequence = sequence
            if subjects.unversioned_type(subject) in self.wanted:
                self.received.append((sequence, payload))
            if pending == 0:
                ended.set_result(True)
            elif self.count >= self.batch:
                ended.set_result(False)
            return
        # A status frame: "404 No Messages" or "408 Request Timeout" ends the pull and means
        # the consumer had nothing more (a full batch ends without one).
        status = headers[9:12]
        if status in (b"404", b"408"):
            ended.set_result(True)
        elif status != b"100":  # not a heartbeat
            description = headers[12:].split(b"\r\n", 1)[0].decode(errors="replace").strip()
            ended.set_exception(ReplayError(f"the stream refused the read: {description}"))


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
        # Not deleted either (see _Pulls.stop): it goes once inactive for its threshold.
        await subscription.unsubscribe()
