"""Dead letters: list what consumers gave up on, and replay a message to its original subject."""

from __future__ import annotations

import base64

import nats.js.errors

from shared import subjects
from shared.bus import Bus
from shared.events import CODEC, DEADLETTER_STREAM, DeadLettered, Envelope

STREAM = subjects.stream_name(DEADLETTER_STREAM)


class DeadLetterNotFoundError(LookupError):
    pass


async def list_dead_letters(bus: Bus, *, limit: int = 100) -> list[tuple[int, Envelope]]:
    """The newest dead letters as ``(sequence in the dead-letter stream, event)``, oldest first."""
    info = await bus.js.stream_info(STREAM)
    first = max(info.state.first_seq, info.state.last_seq - limit + 1)
    found: list[tuple[int, Envelope]] = []
    for sequence in range(first, info.state.last_seq + 1):
        try:
            message = await bus.js.get_msg(STREAM, sequence)
        except nats.js.errors.NotFoundError:
            continue  # deleted or aged out
        assert message.data is not None
        found.append((sequence, CODEC.decode(message.data)))
    return found


async def replay(bus: Bus, sequence: int) -> str:
    """Publish the original message of dead letter ``sequence`` again; returns its subject.

    The replay gets a new ``Nats-Msg-Id`` (the original id is inside JetStream's dedup window
    or long gone); consumers still recognise the event by its own id, so a consumer that did
    apply it ignores it and the one that failed gets another chance.
    """
    try:
        message = await bus.js.get_msg(STREAM, sequence)
    except nats.js.errors.NotFoundError:
        raise DeadLetterNotFoundError(f"no dead letter with sequence {sequence}") from None
    assert message.data is not None
    record = CODEC.decode(message.data).data
    assert isinstance(record, DeadLettered)
    payload = (
        base64.b64decode(record.original_payload)
        if record.payload_encoding == "base64"
        else record.original_payload.encode()
    )
    headers = {k: v for k, v in record.original_headers.items() if not k.startswith("Nats-")} | {
        "Nats-Msg-Id": f"{record.original_event_id or sequence}:replay:{sequence}"
    }
    await bus.js.publish(record.original_subject, payload, headers=headers)
    return record.original_subject
