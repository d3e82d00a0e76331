"""Commands from the backend to a running agent, over NATS, addressed by dispatch id.

The agent follows the dispatch's ``AgentEndRequested`` and ``AgentCommandIssued`` subjects
from the start of the stream, so a command sent while it was still joining is not missed. A
command's text is sealed; it is opened with the dispatch's key (one that cannot be opened, its
key destroyed, is ignored: the agent never says "[apagado]").

Each subject is followed by an ephemeral consumer with a name, so nats-py creates it on the
subject that carries its filter (``$JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>``): the
agent's NATS user may create consumers only there, only with a command subject as the filter,
so it can read commands and nothing else of the streams (docs/deployment.md). nats-py's own
ordered consumer cannot be used (it creates without a name, and recreates with the same name),
so ``_Follower`` does what it does: it watches the consumer's sequence and heartbeats, and
when a message may have been missed (a gap, a silence, NATS restarted) it follows again from
the start of the stream under a new name; commands already seen are skipped by event id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from shared import subjects
from shared.bus import Bus
from shared.events import CODEC, EventDecodeError
from shared.events.agents import AgentCommandIssued, AgentEndRequested
from shared.phi import KeysUnavailableError, is_erased

log = logging.getLogger(__name__)

OnEnd = Callable[[AgentEndRequested], Awaitable[None]]
OnCommand = Callable[[AgentCommandIssued], Awaitable[None]]

# The server sends a heartbeat when it has nothing to deliver for this long; three missed in a
# row mean the consumer is gone (NATS restarted) or the connection lost messages.
HEARTBEAT_SECONDS = 5.0
_STALL_SECONDS = 3 * HEARTBEAT_SECONDS
# A consumer nobody listens to any more is removed by the server after this.
_INACTIVE_SECONDS = 60.0


class _Follower:
    """One subject, followed from the start of its stream by a named ephemeral consumer that
    is created again whenever it may have missed a message."""

    def __init__(
        self, bus: Bus, stream: str, subject: str, deliver: Callable[[Msg], Awaitable[None]]
    ) -> None:
        self.bus, self.stream, self.subject, self.deliver = bus, stream, subject, deliver
        self._subscription: Subscription | None = None
        # Each consumer followed is a generation; messages of an older one are dropped.
        self._generation = 0
        self._delivered = 0  # the consumer's sequence of the last message delivered
        self._heard = time.monotonic()
        self._stale = asyncio.Event()
        self._watching: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._follow()
        self._watching = asyncio.create_task(self._watch(), name="mediai-command-follower")

    async def _follow(self) -> None:
        self._generation += 1
        generation = self._generation
        self._delivered, self._heard = 0, time.monotonic()

        async def on_message(message: Msg) -> None:
            if generation == self._generation:  # else from a consumer given up
                await self._on_message(message)

        inbox = self.bus.nc.new_inbox()
        subscription = await self.bus.nc.subscribe(inbox, cb=on_message)
        try:
            await self.bus.js.add_consumer(
                self.stream,
                ConsumerConfig(
                    name=f"agent-{uuid.uuid4().hex}",
                    filter_subject=self.subject,
                    deliver_subject=inbox,
                    deliver_policy=DeliverPolicy.ALL,
                    ack_policy=AckPolicy.NONE,
                    idle_heartbeat=HEARTBEAT_SECONDS,
                    inactive_threshold=_INACTIVE_SECONDS,
                    mem_storage=True,
                    num_replicas=1,
                ),
            )
        except BaseException:
            with contextlib.suppress(nats.errors.Error):
                await subscription.unsubscribe()
            raise
        previous, self._subscription = self._subscription, subscription
        if previous is not None:
            with contextlib.suppress(nats.errors.Error):
                await previous.unsubscribe()

    async def _on_message(self, message: Msg) -> None:
        self._heard = time.monotonic()
        headers = message.headers or {}
        if headers.get("Status") == "100":  # an idle heartbeat: it names the last delivered
            if int(headers.get("Nats-Last-Consumer", "0")) != self._delivered:
                self._stale.set()
            return
        if "Status" in headers:
            return
        sequence = message.metadata.sequence.consumer
        if sequence != self._delivered + 1:
            self._stale.set()  # a message was lost on the way: follow again from the start
            return
        self._delivered = sequence
        await self.deliver(message)

    async def _watch(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stale.wait(), HEARTBEAT_SECONDS)
            silent = time.monotonic() - self._heard > _STALL_SECONDS
            if not (self._stale.is_set() or silent):
                continue
            try:
                await self._follow()
                self._stale.clear()
            except (nats.errors.Error, OSError) as error:  # NATS away: try again shortly
                log.warning("commands: cannot follow again yet: %s", type(error).__name__)

    async def close(self) -> None:
        if self._watching is not None:
            self._watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watching
        if self._subscription is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._subscription.unsubscribe()
            self._subscription = None


class CommandListener:
    """Subscriptions to one dispatch's commands; ``close()`` ends them."""

    def __init__(self) -> None:
        self._followers: list[_Follower] = []
        self._seen: set[str] = set()

    @classmethod
    async def start(
        cls, bus: Bus, *, tenant: str, dispatch_id: str, on_end: OnEnd, on_command: OnCommand
    ) -> CommandListener:
        listener = cls()

        async def deliver(message: Msg) -> None:
            try:
                sealed = CODEC.decode(message.data)
            except EventDecodeError as error:
                log.error("command for dispatch could not be decoded: %s", error)
                return
            if sealed.tenant != tenant or sealed.subject != dispatch_id:
                # The server lets the agent read any dispatch's commands; this one reads its own.
                log.error("a command for another dispatch was ignored")
                return
            if sealed.id in listener._seen:  # following again redelivers from the start
                return
            try:
                event = await bus.phi.open(sealed)
            except KeysUnavailableError:
                log.error("command for dispatch could not be opened: the key service is away")
                return
            listener._seen.add(event.id)
            try:
                if isinstance(event.data, AgentEndRequested):
                    await on_end(event.data)
                elif isinstance(event.data, AgentCommandIssued):
                    if is_erased(event.data.text):
                        log.warning("a command whose key was destroyed was ignored")
                        return
                    await on_command(event.data)
            except Exception:
                log.exception("command %s failed", event.type)

        for event_type in (AgentEndRequested, AgentCommandIssued):
            follower = _Follower(
                bus,
                subjects.stream_name(event_type.STREAM),
                subjects.key_filter(event_type, tenant=tenant, key=dispatch_id),
                deliver,
            )
            await follower.start()
            listener._followers.append(follower)
        return listener

    async def close(self) -> None:
        for follower in self._followers:
            try:
                await follower.close()
            except Exception as error:  # noqa: BLE001 - the connection may already be gone
                log.debug("unsubscribe: %s", type(error).__name__)
        self._followers.clear()
