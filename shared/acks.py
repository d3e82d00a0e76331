"""JetStream publishes with pipelined acknowledgements: many in flight on one connection.

A publish goes out with the connection's next write, its reply subject one token under a
single wildcard subscription of this process; the ack comes back there and wakes only its own
publisher. No publisher waits for another's round trip, and no request is set up per publish
(``nats.aio.client.request``'s timer task and future chain). Acks are decoded with msgspec.

``nats.js.JetStreamContext.publish_async`` does the same, but loses JetStream's error replies
(an unmet expectation times out instead of failing), so it is not used.
"""

from __future__ import annotations

import asyncio
import itertools

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import PubAck

_NO_RESPONDERS = "503"


class _Reply(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    domain: str | None = None
    error: dict[str, object] | None = None


_decode = msgspec.json.Decoder(_Reply).decode


class Acks:
    """The acks of this connection's JetStream publishes, each delivered to its publisher."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self._prefix = f"{nc.new_inbox()}."
        self._numbers = itertools.count()
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
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
        waiter: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._waiting[token] = waiter
        try:
            await self.nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
            async with asyncio.timeout(timeout):
                reply = await waiter
        finally:
            del self._waiting[token]
        if reply.headers and reply.headers.get("Status") == _NO_RESPONDERS:
            raise nats.js.errors.NoStreamResponseError
        ack = _decode(reply.data)
        if ack.error is not None:
            nats.js.errors.APIError.from_error(ack.error)  # raises the error JetStream named
        return PubAck(stream=ack.stream, seq=ack.seq, domain=ack.domain, duplicate=ack.duplicate)

    async def _subscribe(self) -> None:
        async with self._subscribing:
            if not self._subscribed:
                await self.nc.subscribe(self._prefix + "*", cb=self._on_reply)
                self._subscribed = True

    async def _on_reply(self, reply: Msg) -> None:
        waiter = self._waiting.get(reply.subject[len(self._prefix) :])
        if waiter is not None and not waiter.done():
            waiter.set_result(reply)
