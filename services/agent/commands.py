"""Commands from the backend to a running agent, over NATS, addressed by dispatch id.

The agent follows the dispatch's ``AgentEndRequested`` and ``AgentCommandIssued`` subjects
from the start of the stream, so a command sent while it was still joining is not missed. A
command's text is sealed; it is opened with the dispatch's key (one that cannot be opened, its
key destroyed, is ignored: the agent never says "[apagado]").
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from shared import subjects
from shared.bus import Bus
from shared.events import CODEC, EventDecodeError
from shared.events.agents import AgentCommandIssued, AgentEndRequested
from shared.phi import KeysUnavailableError, is_erased

log = logging.getLogger(__name__)

OnEnd = Callable[[AgentEndRequested], Awaitable[None]]
OnCommand = Callable[[AgentCommandIssued], Awaitable[None]]


class CommandListener:
    """Subscriptions to one dispatch's commands; ``close()`` ends them."""

    def __init__(self) -> None:
        self._subscriptions: list[object] = []
        self._seen: set[str] = set()

    @classmethod
    async def start(
        cls, bus: Bus, *, tenant: str, dispatch_id: str, on_end: OnEnd, on_command: OnCommand
    ) -> CommandListener:
        listener = cls()

        async def deliver(message: Msg) -> None:
            try:
                event = await bus.phi.open(CODEC.decode(message.data))
            except EventDecodeError as error:
                log.error("command for dispatch could not be decoded: %s", error)
                return
            except KeysUnavailableError:
                log.error("command for dispatch could not be opened: the key service is away")
                return
            if event.id in listener._seen:  # an ordered consumer may redeliver after a reset
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
            listener._subscriptions.append(
                await bus.js.subscribe(
                    subjects.key_filter(event_type, tenant=tenant, key=dispatch_id),
                    cb=deliver,
                    ordered_consumer=True,
                    config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
                )
            )
        return listener

    async def close(self) -> None:
        for subscription in self._subscriptions:
            try:
                await subscription.unsubscribe()  # type: ignore[attr-defined]
            except Exception as error:  # noqa: BLE001 - the connection may already be gone
                log.debug("unsubscribe: %s", type(error).__name__)
        self._subscriptions.clear()
