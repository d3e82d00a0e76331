"""Live timelines: the projection says a tenant's timelines changed (PostgreSQL ``NOTIFY``, so a
write by any replica wakes the readers of every replica), and each stream re-reads after its
cursor. A stream also re-reads every ``HEARTBEAT`` seconds, so a missed notice costs at most
that long, never an entry."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg
from litestar import Litestar

from services.sessions.store import CHANNEL
from shared.background import TaskHealth

log = logging.getLogger(__name__)

HEARTBEAT = 10.0


class News:
    """Per tenant, an event set when its timelines change; a reader takes one before it reads,
    then waits on it, so a change between its read and its wait is never missed."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Event] = {}

    def changed(self, tenant: str) -> None:
        event = self._waiting.pop(tenant, None)
        if event is not None:
            event.set()

    def watch(self, tenant: str) -> asyncio.Event:
        return self._waiting.setdefault(tenant, asyncio.Event())


async def listen(app: Litestar) -> None:
    """The background task: one connection that LISTENs; when it drops, the task fails and is
    restarted (readers fall back on their heartbeat meanwhile)."""
    news: News = app.state.news
    conn = await asyncpg.connect(app.state.settings.database_url)
    closed = asyncio.Event()
    conn.add_termination_listener(lambda _: closed.set())

    def notified(_conn: Any, _pid: int, _channel: str, tenant: object) -> None:
        news.changed(str(tenant))

    try:
        await conn.add_listener(CHANNEL, notified)
        TaskHealth.current().running()
        await closed.wait()
        raise ConnectionError("the timeline's LISTEN connection closed")
    finally:
        await conn.close()
