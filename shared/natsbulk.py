"""A nats-py client that can hand one subscription's raw frames to a plain function.

nats-py turns every delivered message into a ``Msg`` (headers parsed into a dict, a queue put,
a task switch, a callback) — about half of a replay's time when a replay is a million
messages. A replay needs only each message's reply subject (it holds the stream sequence) and
its payload, so a subscription made with ``subscribe_frames`` skips all of that: the client's
protocol parser hands the frame straight to ``on_frame``. Every other subscription works as
in nats-py. ``shared.bus.connect_bus`` connects with this client.
"""

from __future__ import annotations

from collections.abc import Callable

from nats.aio.client import Client

# on_frame(subject, reply subject, payload, raw headers or b""): runs in the client's read
# loop, so it must be quick and must not block.
FrameHandler = Callable[[bytes, bytes, bytes, bytes], None]


class BulkClient(Client):
    """``nats.aio.client.Client`` plus subscriptions whose frames skip the message objects."""

    def __init__(self) -> None:
        super().__init__()
        self._frame_handlers: dict[int, FrameHandler] = {}

    async def subscribe_frames(self, subject: str, on_frame: FrameHandler) -> int:
        """Subscribe ``subject`` with ``on_frame`` called for each message; returns the
        subscription id for ``unsubscribe_frames``."""
        subscription = await self.subscribe(subject)
        sid: int = subscription._id
        self._frame_handlers[sid] = on_frame
        return sid

    async def unsubscribe_frames(self, sid: int) -> None:
        self._frame_handlers.pop(sid, None)
        subscription = self._subs.get(sid)
        if subscription is not None and not self.is_closed:
            await subscription.unsubscribe()

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        # The one override: nats-py's parser calls this once per MSG/HMSG frame.
        on_frame = self._frame_handlers.get(sid)
        if on_frame is None:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        on_frame(subject, reply, data, headers or b"")
