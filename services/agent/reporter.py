"""Publishing a session's events without ever blocking the audio path.

Callbacks of the voice pipeline are synchronous and must return at once, so events go through a
queue to one sender task, which keeps their order (transcripts are read in order) and retries
with the same event id while NATS or the key service is away (JetStream drops the duplicates of
a retry). Sealing happens there too, in ``Bus.publish_envelope``, off the audio path; an event
that can no longer be sealed (its patient's key was destroyed mid-session) is dropped, never
published in clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from shared.bus import Bus, BusUnavailableError
from shared.events import Envelope, Event, envelope
from shared.keys_api import KeyRequestError
from shared.phi import KeysUnavailableError

log = logging.getLogger(__name__)


class Reporter:
    """Publishes one session's events (tenant and key fixed) in order, in the background."""

    def __init__(self, bus: Bus, *, tenant: str, key: str, traceparent: str | None = None) -> None:
        self.bus, self.tenant, self.key, self.traceparent = bus, tenant, key, traceparent
        self._queue: asyncio.Queue[Envelope] = asyncio.Queue()
        self._task = asyncio.create_task(self._send_forever(), name="mediai-reporter")

    def emit(self, data: Event) -> Envelope:
        """Queue an event; returns its envelope (its id is final)."""
        event = envelope(
            data,
            source=self.bus.source,
            tenant=self.tenant,
            subject=self.key,
            traceparent=self.traceparent,
        )
        self._queue.put_nowait(event)
        return event

    async def publish(self, data: Event) -> Envelope:
        """Queue an event and wait until JetStream has it (for the last events of a session)."""
        event = self.emit(data)
        await self.flush()
        return event

    async def flush(self, within: float = 5.0) -> bool:
        """Wait until every queued event is published; False if that took longer than within."""
        try:
            await asyncio.wait_for(self._queue.join(), within)
        except TimeoutError:
            log.error("reporter: %d events not published in %.0fs", self._queue.qsize(), within)
            return False
        return True

    async def close(self, within: float = 5.0) -> None:
        await self.flush(within)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _send_forever(self) -> None:
        while True:
            event = await self._queue.get()
            delay = 0.2
            while True:
                try:
                    await self.bus.publish_envelope(event)
                    break
                except (BusUnavailableError, KeysUnavailableError) as error:
                    log.warning("reporter: %s, retrying %s", type(error).__name__, event.type)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                except KeyRequestError as error:
                    log.error("reporter: %s not published: %s", event.type, error.code)
                    break
            self._queue.task_done()
