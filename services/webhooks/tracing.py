"""A webhook's trace leads to its room's: the trace of the room's ``room_started`` webhook.

LiveKit sends webhooks without trace context, so each starts a trace of its own. The request's
span gets the room session's id (``mediai.room.sid``: a search by it finds every webhook of the
room, and the agent jobs in it), the room's trace id as a tag, and a span link to it where the
backend keeps links. The room's trace is read from the log: the last ``RoomStarted`` of that
room, if it is of the same room session. Best effort: a webhook is never slowed past a short
bound, nor failed, for its trace.

The process remembers the room traces it published or read (``RoomTraces``, bounded), so the
room's later webhooks are linked without reading the log again; only a webhook of an unknown
room session (one another replica started, or one before a restart) costs that read. A read
that found nothing is remembered too, for ``MISS_SECONDS``: a burst of webhooks of a room whose
start is not in the log (or while the log does not answer) reads it once, not once each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import nats.errors
import nats.js.errors
from cachetools import TTLCache
from opentelemetry import trace

from services.webhooks.core import NO_ROOM_KEY, Publication
from shared import attributes as attr
from shared import subjects
from shared.bus import Bus
from shared.events import CODEC, EventDecodeError
from shared.events.rooms import RoomStarted
from shared.telemetry import extract

log = logging.getLogger(__name__)
LOOKUP_SECONDS = 0.5
ROOMS_REMEMBERED = 4096
MISS_SECONDS = 5.0


class RoomTraces:
    """The room session id and ``traceparent`` of each room's last ``RoomStarted`` this process
    published or read, for the last ``size`` rooms."""

    def __init__(
        self, size: int = ROOMS_REMEMBERED, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.size = size
        self._rooms: OrderedDict[tuple[str, str], tuple[str, str]] = OrderedDict()
        # The room sessions a read of the log found no start for, each for MISS_SECONDS.
        self._missed: TTLCache[tuple[str, str, str], bool] = TTLCache(
            maxsize=size, ttl=MISS_SECONDS, timer=clock
        )

    def remember(self, tenant: str, room: str, sid: str, traceparent: str | None) -> None:
        if not sid or not traceparent:
            return
        self._rooms[(tenant, room)] = (sid, traceparent)
        self._rooms.move_to_end((tenant, room))
        if len(self._rooms) > self.size:
            self._rooms.popitem(last=False)

    def missed(self, tenant: str, room: str, sid: str) -> None:
        """A read of the log found no start of this room session (or did not answer)."""
        self._missed[(tenant, room, sid)] = True

    def recently_missed(self, tenant: str, room: str, sid: str) -> bool:
        """Whether the log was read for this room session less than ``MISS_SECONDS`` ago and
        had no start for it: reading it again so soon would find the same."""
        return (tenant, room, sid) in self._missed

    def recall(self, tenant: str, room: str, sid: str) -> tuple[str, str] | None:
        """The room's (sid, traceparent) if it is of the session ``sid``. A webhook without a
        session id gets None: which session it is of, only the log's last start says."""
        known = self._rooms.get((tenant, room))
        return known if sid and known is not None and known[0] == sid else None


async def link_to_room(bus: Bus, rooms: RoomTraces, publication: Publication) -> None:
    """Tag (and link) the current request's span with its room session and the room's trace."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    sid = str(getattr(publication.data, "room_sid", "") or "")
    if sid:
        span.set_attribute(attr.ROOM_SID, sid)
    if isinstance(publication.data, RoomStarted):
        own = span.get_span_context().trace_id
        span.set_attribute(attr.ROOM_TRACE_ID, format(own, "032x"))  # the room's trace is this
        return
    if publication.key == NO_ROOM_KEY:
        return
    tenant, room_key = publication.tenant, publication.key
    room_started = rooms.recall(tenant, room_key, sid)
    if room_started is None:
        if rooms.recently_missed(tenant, room_key, sid):
            return
        room_started = await _room_started(bus, tenant, room_key)
        if room_started is None:
            rooms.missed(tenant, room_key, sid)
        else:
            rooms.remember(tenant, room_key, *room_started)
    if room_started is None or (sid and room_started[0] != sid):
        return  # no start seen, or another session of a reused room name
    room = trace.get_current_span(extract({"traceparent": room_started[1]})).get_span_context()
    if room.is_valid:
        span.add_link(room, {attr.ROOM_SID: room_started[0]})
        span.set_attribute(attr.ROOM_TRACE_ID, format(room.trace_id, "032x"))


async def _room_started(bus: Bus, tenant: str, room: str) -> tuple[str, str] | None:
    """(room sid, traceparent) of the room's last ``RoomStarted``, or None."""
    subject = subjects.key_filter(RoomStarted, tenant=tenant, key=room)
    try:
        message = await asyncio.wait_for(
            bus.js.get_last_msg(subjects.stream_name(RoomStarted.STREAM), subject),
            LOOKUP_SECONDS,
        )
        event = CODEC.decode(message.data or b"")
    except (nats.errors.Error, TimeoutError, EventDecodeError) as error:
        if not isinstance(error, nats.js.errors.NotFoundError):
            log.debug("room trace lookup failed: %s", type(error).__name__)
        return None
    if not isinstance(event.data, RoomStarted) or not event.traceparent:
        return None
    return event.data.room_sid, event.traceparent
