"""Dead letters: list what consumers gave up on, and replay them to the consumer that gave up.

A replay publishes the original message again, marked for that consumer alone (the others
acknowledge it untouched, see ``shared.consumer``), and removes the dead letter: if it fails
again, the consumer dead-letters it again, so the dead-letter stream lists what is still broken.
A dead letter's payload and reason are sealed (``shared.phi``); both are opened here, and one
whose key was destroyed can no longer be replayed.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

import nats.js.errors

from shared import subjects
from shared.bus import Bus
from shared.consumer import REPLAY_FOR_HEADER
from shared.events import CODEC, DEADLETTER_STREAM, DeadLettered, Envelope
from shared.phi import is_erased

STREAM = subjects.stream_name(DEADLETTER_STREAM)


class DeadLetterNotFoundError(LookupError):
    pass


async def list_dead_letters(bus: Bus, *, limit: int | None = 100) -> list[tuple[int, Envelope]]:
    """The newest dead letters (all of them with ``limit=None``) as ``(sequence in the
    dead-letter stream, event)``, oldest first."""
    info = await bus.js.stream_info(STREAM)
    first = info.state.first_seq
    if limit is not None:
        first = max(first, info.state.last_seq - limit + 1)
    found: list[tuple[int, Envelope]] = []
    for sequence in range(first, info.state.last_seq + 1):
        try:
            message = await bus.js.get_msg(STREAM, sequence)
        except nats.js.errors.NotFoundError:
            continue  # replayed, deleted or aged out
        assert message.data is not None
        found.append((sequence, await bus.phi.open(CODEC.decode(message.data))))
    return found


async def replay(bus: Bus, sequence: int) -> str:
    """Publish the original message of dead letter ``sequence`` again, for the consumer that
    gave up on it, then delete the dead letter; returns the original subject.

    The replay gets a new ``Nats-Msg-Id`` (the original id is inside JetStream's dedup window
    or long gone); the consumer still recognises the event by its own id, so a consumer that did
    apply it meanwhile ignores it."""
    try:
        message = await bus.js.get_msg(STREAM, sequence)
    except nats.js.errors.NotFoundError:
        raise DeadLetterNotFoundError(f"no dead letter with sequence {sequence}") from None
    assert message.data is not None
    record = (await bus.phi.open(CODEC.decode(message.data))).data
    assert isinstance(record, DeadLettered)
    if is_erased(record.original_payload):
        raise DeadLetterNotFoundError(f"dead letter {sequence} was erased (its key was destroyed)")
    payload = (
        base64.b64decode(record.original_payload)
        if record.payload_encoding == "base64"
        else record.original_payload.encode()
    )
    headers = {
        k: v
        for k, v in record.original_headers.items()
        if not k.startswith("Nats-") and k != REPLAY_FOR_HEADER
    }
    headers["Nats-Msg-Id"] = f"{record.original_event_id or sequence}:replay:{sequence}"
    headers[REPLAY_FOR_HEADER] = record.consumer
    await bus.js.publish(record.original_subject, payload, headers=headers)
    await bus.js.delete_msg(STREAM, sequence)
    return record.original_subject


def matching(
    *, consumer: str | None = None, event_type: str | None = None
) -> Callable[[DeadLettered], bool]:
    """A filter of dead letters by the consumer that gave up, and by the original event type
    (with or without its version: ``mediai.room.started`` matches every version)."""

    def accepts(record: DeadLettered) -> bool:
        if consumer is not None and record.consumer != consumer:
            return False
        if event_type is not None:
            original = record.original_type or ""
            if original != event_type and original.rsplit(".", 1)[0] != event_type:
                return False
        return True

    return accepts


async def replay_all(bus: Bus, accepts: Callable[[DeadLettered], bool]) -> list[int]:
    """Replay every dead letter ``accepts`` takes, oldest first; returns their sequences."""
    replayed = []
    for sequence, event in await list_dead_letters(bus, limit=None):
        record = event.data
        if isinstance(record, DeadLettered) and accepts(record):
            await replay(bus, sequence)
            replayed.append(sequence)
    return replayed
