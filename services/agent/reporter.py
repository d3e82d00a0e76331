"""Publishing a session's events without ever blocking the audio path, and without losing them.

Callbacks of the voice pipeline are synchronous and must return at once, so each event is
written to the session's spool journal (services/agent/spool.py) and queued for one sender
task, which keeps their order (transcripts are read in order) and retries with the same event id
while NATS is away (JetStream drops the duplicates of a retry). The journal is what survives: a
job that ends, or is killed, before NATS is back leaves its unsent events to its worker.
Personal fields are sealed before the journal is written, with the dispatch's keys the job holds
in memory (``Phi.seal_now``), so the spool on disk holds ciphertext as the stream does; an event
that can no longer be sealed (its patient's key was destroyed mid-session) is dropped, never
published in clear.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.agent.spool import Journal
from shared.bus import Bus, BusUnavailableError
from shared.events import Envelope, Event, envelope
from shared.keys_api import KeyRequestError
from shared.phi import KeysUnavailableError

log = logging.getLogger(__name__)

# How long a session's end waits for NATS before leaving the rest to the spool: well inside
# livekit-agents' shutdown_process_timeout (10 s), so the job still exits cleanly.
CLOSE_WITHIN = 5.0


class Reporter:
    """Publishes one session's events (tenant and key fixed) in order, in the background."""

    def __init__(
        self,
        bus: Bus,
        journal: Journal,
        *,
        tenant: str,
        key: str,
        traceparent: str | None = None,
    ) -> None:
        self.bus, self.journal = bus, journal
        self.tenant, self.key, self.traceparent = tenant, key, traceparent
        self._queue: asyncio.Queue[tuple[Envelope, int | None]] = asyncio.Queue()
        self._closed = False
        self._task = asyncio.create_task(self._send_forever(), name="mediai-reporter")

    def emit(self, data: Event) -> Envelope:
        """Spool and queue an event; returns its envelope (its id is final)."""
        event = envelope(
            data,
            source=self.bus.source,
            tenant=self.tenant,
            subject=self.key,
            traceparent=self.traceparent,
        )
        if self._closed:  # e.g. a late callback of a closing session: nobody would send it
            log.warning(
                "reporter: %s %s emitted after the session closed; dropped", event.type, event.id
            )
            return event
        event = self.bus.phi.seal_now(event)  # before it touches the disk
        offset = self.journal.append(event)
        self._queue.put_nowait((event, offset))
        return event

    async def publish(self, data: Event) -> Envelope:
        """Queue an event and wait until JetStream has it (for the last events of a session)."""
        event = self.emit(data)
        await self.flush()
        return event

    async def flush(self, within: float = CLOSE_WITHIN) -> bool:
        """Wait until every queued event is published; False if that took longer than within."""
        try:
            await asyncio.wait_for(self._queue.join(), within)
        except TimeoutError:
            log.error(
                "reporter: %d events not published in %.0fs (NATS away?); the spool keeps them",
                self._queue.qsize(),
                within,
            )
            return False
        return True

    async def close(self, within: float = CLOSE_WITHIN) -> None:
        """Publish what is queued within ``within``, then stop and release the journal: what
        is still unsent stays in it for the worker to publish once NATS is back."""
        await self.flush(within)
        self._closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.journal.close()

    async def _send_forever(self) -> None:
        while True:
            event, offset = await self._queue.get()
            delay = 0.2
            while True:
                try:
                    await self.bus.publish_envelope(event)
                    break
                except (BusUnavailableError, KeysUnavailableError) as error:
                    log.warning(
                        "reporter: %s, retrying %s %s", type(error).__name__, event.type, event.id
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                except KeyRequestError as error:
                    log.error("reporter: %s %s not published: %s", event.type, event.id, error.code)
                    break
            self.journal.sent(offset)
            self._queue.task_done()
