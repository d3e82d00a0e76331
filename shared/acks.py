"""JetStream publishes with pipelined acknowledgements: many in flight on one connection.

A publish goes out with the connection's next write, its reply subject one token under a
single wildcard subscription of this process; the ack comes back there and wakes only its own
publisher. No publisher waits for another's round trip, and no request is set up per publish
(``nats.aio.client.request``'s timer task and future chain). The subscription takes raw frames
(``shared.natsbulk``): an ack wakes its publisher from the client's read loop, with no message
object, queue or task switch in between. Acks are decoded with msgspec.

``nats.js.JetStreamContext.publish_async`` does the same, but loses JetStream's error replies
(an unmet expectation times out instead of failing), so it is not used.

Waiting is bounded without a timer per publish: one sweep, every ``SWEEP_SECONDS`` while any
publish waits, fails those past their deadline (so a timeout is late by at most that much).
"""

from __future__ import annotations

import asyncio
import itertools

import msgspec
import nats.errors
import nats.js.errors
from nats.js.api import PubAck

from shared.natsbulk import BulkClient

# The inline status of a reply without responders (no stream on the subject): its header block
# is b"NATS/1.0 503\r\n\r\n".
_NO_RESPONDERS = b"NATS/1.0 503"
SWEEP_SECONDS = 0.1


class _Reply(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    domain: str | None = None
    error: dict[str, object] | None = None


_decode = msgspec.json.Decoder(_Reply).decode
# An ack as it arrives: its payload and its raw header block (b"" when it has none).
_Frame = tuple[bytes, bytes]


class Acks:
    """The acks of this connection's JetStream publishes, each delivered to its publisher."""

    def __init__(self, nc: BulkClient) -> None:
        self.nc = nc
        self._prefix = f"{nc.new_inbox()}."
        self._prefix_length = len(self._prefix.encode())
        self._numbers = itertools.count()
        # Each waiting publisher's future and deadline (the loop's clock), oldest first.
        self._waiting: dict[bytes, tuple[asyncio.Future[_Frame], float]] = {}
        self._sweep: asyncio.TimerHandle | None = None
        self._subscribed = False
        self._subscribing = asyncio.Lock()

    async def publish(
        self, subject: str, payload: bytes, headers: dict[str, str], *, timeout: float
    ) -> PubAck:
        """Publish and wait (at most ``timeout`` s) for JetStream's ack; raises nats-py's
        errors: ``TimeoutError``, ``NoStreamResponseError``, ``APIError`` for a refusal."""
        if not self._subscribed:
            await self._subscribe()
        token = str(next(self._numbers))
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[_Frame] = loop.create_future()
        key = token.encode()
        self._waiting[key] = (waiter, loop.time() + timeout)
        if self._sweep is None:
            self._sweep = loop.call_later(SWEEP_SECONDS, self._expire)
        try:
            await self.nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
            data, header_block = await waiter
        finally:
            del self._waiting[key]
        if header_block.startswith(_NO_RESPONDERS):
            raise nats.js.errors.NoStreamResponseError
        ack = _decode(data)
        if ack.error is not None:
            nats.js.errors.APIError.from_error(ack.error)  # raises the error JetStream named
        return PubAck(stream=ack.stream, seq=ack.seq, domain=ack.domain, duplicate=ack.duplicate)

    async def _subscribe(self) -> None:
        async with self._subscribing:
            if not self._subscribed:
                await self.nc.subscribe_frames(self._prefix + "*", self._on_frame)
                self._subscribed = True

    def _on_frame(self, subject: bytes, reply: bytes, data: bytes, headers: bytes) -> None:
        # In the client's read loop: only wake the publisher.
        waiting = self._waiting.get(subject[self._prefix_length :])
        if waiting is not None and not waiting[0].done():
            waiting[0].set_result((data, headers))

    def _expire(self) -> None:
        """The sweep: fail the publishes past their deadline; again later while any waits."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for waiter, deadline in self._waiting.values():
            if deadline <= now and not waiter.done():
                waiter.set_exception(TimeoutError())
        self._sweep = loop.call_later(SWEEP_SECONDS, self._expire) if self._waiting else None
