"""Serving NATS request/reply operations (the key service, scheduling for the agents): one
subscription per operation in a queue group, each request answered in a task of its own so a
slow one does not hold the others back."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

Answer = Callable[[str, Msg], Awaitable[bytes]]


async def serve(
    nc: Client, subject: Callable[[str], str], operations: Iterable[str], answer: Answer, queue: str
) -> None:
    """Answer ``subject(operation)`` requests with ``answer(operation, message)`` until
    cancelled."""
    running: set[asyncio.Task[None]] = set()

    async def respond(operation: str, message: Msg) -> None:
        payload = await answer(operation, message)
        if message.reply:
            await message.respond(payload)

    def subscriber(operation: str) -> Callable[[Msg], Awaitable[None]]:
        async def on_message(message: Msg) -> None:
            task = asyncio.create_task(respond(operation, message))
            running.add(task)
            task.add_done_callback(running.discard)

        return on_message

    subscriptions = [
        await nc.subscribe(subject(op), queue=queue, cb=subscriber(op)) for op in operations
    ]
    try:
        await asyncio.Event().wait()
    finally:
        for subscription in subscriptions:
            # A connection already closing has dropped its subscriptions anyway.
            with contextlib.suppress(
                nats.errors.ConnectionClosedError,
                nats.errors.ConnectionDrainingError,
                nats.errors.BadSubscriptionError,
            ):
                await subscription.unsubscribe()
