"""The sessions service: each session's timeline, projected from the event log, for the clinic's
console (docs/console.md). Its own service because it reads everything (both streams, every
producer) and owns no decision: billing must never read the PHI stream, and the rooms and agent
services each own one aggregate; a projection apart can be rebuilt by replay without touching
them."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated

import asyncpg
import msgspec
from litestar import Litestar, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.params import Parameter
from litestar.response import Stream

from services.sessions import store
from services.sessions.consumers import forget_personal, run_timeline, run_timeline_phi
from services.sessions.live import HEARTBEAT, News, listen
from services.sessions.schemas import (
    DispatchSummary,
    SessionList,
    SessionSummary,
    Timeline,
    TimelineEntry,
)
from shared.background import BackgroundTask, every
from shared.bus import Bus
from shared.config import Settings
from shared.contract import Cursor, errors
from shared.db import Connection
from shared.http import ForbiddenError, NotFoundError, create_service_app
from shared.phi import Phi
from shared.tenants import Tenant
from shared.viewtokens import may_read_personal, view_scope

PAGE = 200
# A stream ends after this long (or when the caller's view token expires); the client reconnects
# with its cursor.
STREAM_SECONDS = 3600.0
_encode = msgspec.json.Encoder()


async def _entry(
    row: asyncpg.Record, *, phi: Phi, tenant: str, personal: bool, trace_url: Callable[[str], str]
) -> TimelineEntry:
    """An entry for a caller: its personal parts opened when the caller may read them (each
    is sealed under the name of its event field, the path its seal is bound to)."""
    sealed = row["personal"] if personal else None
    opened = (
        {
            path: await phi.open_text(value, tenant=tenant, path=path)
            if isinstance(value, str)
            else value
            for path, value in sealed.items()
        }
        if sealed
        else None
    )
    return TimelineEntry.of(row, personal=opened, trace_url=trace_url)


class Session(msgspec.Struct, frozen=True):
    summary: SessionSummary
    room_sid: str
    dispatch_ids: list[str]


async def _session(conn: Connection, tenant: str, session_id: str) -> Session:
    """A session by its id: a room SID, or a dispatch id (the consultation: its agent's entries
    and those of the room session it joined)."""
    room = await store.room_session(conn, tenant, session_id)
    if room is not None:
        dispatches = await store.dispatches_of(conn, tenant, [session_id])
        return Session(
            _room_summary(room, dispatches), session_id, [d["dispatch_id"] for d in dispatches]
        )
    dispatch = await store.dispatch(conn, tenant, session_id)
    if dispatch is None:
        raise NotFoundError("no session with this id", code="session_not_found")
    room_sid = dispatch["room_sid"]
    room = await store.room_session(conn, tenant, room_sid) if room_sid else None
    summary = SessionSummary(
        id=session_id,
        kind="consultation",
        room=dispatch["room"],
        room_sid=room_sid,
        started_at=room["started_at"] if room else dispatch["requested_at"],
        finished_at=room["finished_at"] if room else dispatch["ended_at"],
        live=(room["finished_at"] is None) if room else dispatch["state_rank"] <= 3,
        dispatches=[DispatchSummary.of(dispatch)],
    )
    return Session(summary, room_sid, [session_id])


def _room_summary(room: asyncpg.Record, dispatches: list[asyncpg.Record]) -> SessionSummary:
    return SessionSummary(
        id=room["room_sid"],
        kind="room",
        room=room["room"],
        room_sid=room["room_sid"],
        started_at=room["started_at"],
        finished_at=room["finished_at"],
        live=room["finished_at"] is None,
        dispatches=[DispatchSummary.of(d) for d in dispatches],
    )


@get(
    "/v1/sessions",
    operation_id="listSessions",
    summary="The tenant's sessions, newest first: room sessions and agents that never joined",
    opt=view_scope("sessions:read"),
)
async def list_sessions(
    tenant: Tenant,
    pool: asyncpg.Pool,
    live: bool | None = None,
    limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
) -> SessionList:
    if tenant.grant is not None and tenant.grant.dispatch:
        raise ForbiddenError("this view token reads one consultation, not the list")
    async with pool.acquire() as conn:
        rooms = await store.room_sessions(conn, tenant.id, live=live, limit=limit)
        dispatches = await store.dispatches_of(conn, tenant.id, [r["room_sid"] for r in rooms])
        roomless = await store.roomless_dispatches(conn, tenant.id, live=live, limit=limit)
    by_room: dict[str, list[asyncpg.Record]] = {}
    for d in dispatches:
        by_room.setdefault(d["room_sid"], []).append(d)
    found = [_room_summary(r, by_room.get(r["room_sid"], [])) for r in rooms]
    found += [
        SessionSummary(
            id=d["dispatch_id"],
            kind="consultation",
            room=d["room"],
            room_sid="",
            started_at=d["requested_at"],
            finished_at=d["ended_at"],
            live=d["state_rank"] <= 3,
            dispatches=[DispatchSummary.of(d)],
        )
        for d in roomless
    ]
    found.sort(key=lambda s: s.started_at.timestamp() if s.started_at else 0.0, reverse=True)
    return SessionList(sessions=found[:limit])


_NO_SESSION = {"session_not_found": "no session with this id in this tenant"}


@get(
    "/v1/sessions/{session_id:str}/timeline",
    operation_id="getSessionTimeline",
    summary="A page of a session's timeline (by room SID or dispatch id), after a cursor",
    opt=view_scope("sessions:read", session_id="dispatch"),
    responses=errors({404: _NO_SESSION}),
)
async def get_timeline(
    session_id: str,
    tenant: Tenant,
    pool: asyncpg.Pool,
    bus: Bus,
    settings: Settings,
    after: Cursor = 0,
    limit: Annotated[int, Parameter(ge=1, le=1000)] = PAGE,
) -> Timeline:
    personal = may_read_personal(tenant.grant)
    async with pool.acquire() as conn:
        session = await _session(conn, tenant.id, session_id)
        rows = await _page(conn, tenant.id, session, after, limit + 1)
    entries = [
        await _entry(
            r, phi=bus.phi, tenant=tenant.id, personal=personal, trace_url=settings.trace_url
        )
        for r in rows[:limit]
    ]
    return Timeline(
        session=session.summary,
        entries=entries,
        cursor=entries[-1].seq if entries else after,
        more=len(rows) > limit,
        personal=personal,
    )


async def _page(
    conn: Connection, tenant: str, session: Session, after: int, limit: int
) -> list[asyncpg.Record]:
    return await store.entries(
        conn,
        tenant,
        room_sid=session.room_sid,
        dispatch_ids=session.dispatch_ids,
        after=after,
        limit=limit,
    )


@get(
    "/v1/sessions/{session_id:str}/timeline/stream",
    operation_id="streamSessionTimeline",
    responses=errors({404: _NO_SESSION}),
    summary="A session's timeline as it grows: newline-delimited JSON entries after a cursor",
    description='Each line is a TimelineEntry, or {"heartbeat": true} every few seconds. '
    "Read it with fetch() and an Authorization header (EventSource cannot send one); the "
    "stream ends within an hour, or when the view token expires: reconnect with the last "
    "entry's seq as `after`.",
    opt=view_scope("sessions:read", session_id="dispatch"),
    media_type="application/x-ndjson",
)
async def stream_timeline(
    session_id: str,
    tenant: Tenant,
    pool: asyncpg.Pool,
    bus: Bus,
    settings: Settings,
    news: News,
    after: Cursor = 0,
) -> Stream:
    personal = may_read_personal(tenant.grant)
    async with pool.acquire() as conn:
        await _session(conn, tenant.id, session_id)  # 404 before the stream starts
    ends = time.time() + STREAM_SECONDS
    if tenant.grant is not None:
        ends = min(ends, tenant.grant.expires_at)

    async def lines() -> AsyncIterator[bytes]:
        cursor = after
        while time.time() < ends:
            changed = news.watch(tenant.id)  # taken before reading: no change slips between
            async with pool.acquire() as conn:
                session = await _session(conn, tenant.id, session_id)
                rows = await _page(conn, tenant.id, session, cursor, PAGE)
            for row in rows:
                entry = await _entry(
                    row,
                    phi=bus.phi,
                    tenant=tenant.id,
                    personal=personal,
                    trace_url=settings.trace_url,
                )
                cursor = entry.seq
                yield _encode.encode(entry) + b"\n"
            if len(rows) == PAGE:
                continue
            try:
                await asyncio.wait_for(changed.wait(), min(HEARTBEAT, max(0.0, ends - time.time())))
            except TimeoutError:
                yield b'{"heartbeat":true}\n'

    return Stream(lines(), media_type="application/x-ndjson")


def _provide_news(state: State) -> News:
    news: News = state.news
    return news


def create_app(settings: Settings) -> Litestar:
    app = create_service_app(
        service="sessions",
        settings=settings,
        route_handlers=[list_sessions, get_timeline, stream_timeline],
        background=[
            run_timeline,
            run_timeline_phi,
            BackgroundTask("timeline-listen", listen),
            every("timeline-forget-personal", 3600.0, forget_personal),
        ],
        dependencies={"news": Provide(_provide_news, sync_to_thread=False)},
        description=(
            "Sessions and their timelines, projected from the event log: who joined and left, "
            "the agents' states, consent, what was said, tool calls, red flags, hints, usage, "
            "each with its time and trace."
        ),
    )
    app.state.news = News()
    return app
