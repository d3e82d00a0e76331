"""The baseline of the read benchmark: what a user would build without MediAI.

A bare Litestar app answering, from the same tables with the same SQL as the services (their
own store functions, called directly), an asyncpg pool of the same size, served by uvicorn
exactly as ``mediai serve`` serves a service (uvloop, httptools, no access log):

- ``GET /v1/agents/{id}`` and ``GET /v1/agents?room=`` (the dispatcher's), with the same public
  fields in camelCase;
- ``GET /v1/rooms/{name}`` (the rooms service's open instance and who is present);
- ``GET /v1/appointments/{id}`` (scheduling's), the stored row as it is: a bare app keeps a
  patient's name in plain text, so nothing is opened and no read of personal data is recorded;
- ``GET /v1/usage`` (billing's usage of the current month by meter, and its open intervals);
- ``GET /v1/sessions`` (the sessions service's room sessions with their dispatches, and the
  dispatches that joined none), the rows as they are;
- ``GET /v1/sessions/{id}/timeline`` (a session's first page of timeline entries, the id a room
  SID or a dispatch id), the rows as they are: sealed parts stay sealed.

No API key, no tenant lookup, no tracing, no metrics: the tenant is fixed on the command line.

Run: python -m bench.bare_reads HOST PORT TENANT (bench.read_throughput starts it; the database
from MEDIAI_DATABASE_URL).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
from litestar import Litestar, get
from litestar.exceptions import NotFoundException

from bench.bare import serve
from services.billing import queries as billing
from services.billing.meters import DEFAULT as CATALOGUE
from services.billing.periods import month_of
from services.rooms import store as rooms
from services.scheduling import store as scheduling
from services.sessions import store as sessions
from shared.config import load_settings

PRIVATE = ("tenant_id", "livekit_dispatch_id", "worker_id", "updated_at")


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.title() for word in rest)


def _public(row: asyncpg.Record) -> dict[str, Any]:
    fields = {_camel(k): v for k, v in row.items() if k not in PRIVATE}
    fields["id"] = fields.pop("dispatchId")
    return fields


def create_app(database_url: str, tenant: str, zone: ZoneInfo) -> Litestar:
    pools: list[asyncpg.Pool] = []

    @asynccontextmanager
    async def connected(_: Litestar) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=10)
        pools.append(pool)
        yield
        await pool.close()

    @get("/v1/agents/{dispatch_id:str}")
    async def get_agent(dispatch_id: str) -> dict[str, Any]:
        row = await pools[0].fetchrow(
            "SELECT * FROM agent_dispatches WHERE dispatch_id = $1 AND tenant_id = $2",
            dispatch_id,
            tenant,
        )
        if row is None:
            raise NotFoundException(f"no dispatch {dispatch_id!r}")
        return _public(row)

    @get("/v1/agents")
    async def list_agents(room: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        # The dispatcher's two statements (services/dispatcher/store.py), without a state.
        if room is None:
            rows = await pools[0].fetch(
                "SELECT * FROM agent_dispatches WHERE tenant_id = $1"
                " ORDER BY requested_at DESC LIMIT $2",
                tenant,
                limit,
            )
        else:
            rows = await pools[0].fetch(
                "SELECT * FROM agent_dispatches WHERE tenant_id = $1 AND room = $3"
                " ORDER BY requested_at DESC LIMIT $2",
                tenant,
                limit,
                room,
            )
        return [_public(r) for r in rows]

    @get("/v1/rooms/{name:str}")
    async def get_room(name: str) -> dict[str, Any]:
        row = await rooms.open_room(pools[0], tenant, name)
        if row is None:
            raise NotFoundException(f"no room {name!r}")
        present = await rooms.count_present(pools[0], row.sid)
        return {**msgspec.to_builtins(row), "numParticipants": present}

    @get("/v1/appointments/{appointment_id:str}")
    async def get_appointment(appointment_id: str) -> dict[str, Any]:
        async with pools[0].acquire() as conn:
            appointment = await scheduling.get_appointment(conn, tenant, appointment_id)
        if appointment is None:
            raise NotFoundException(f"no appointment {appointment_id!r}")
        return msgspec.to_builtins(appointment)  # type: ignore[no-any-return]

    @get("/v1/usage")
    async def get_usage() -> dict[str, Any]:
        month = month_of(datetime.now(UTC), zone)
        async with pools[0].acquire() as conn:
            rows = await billing.usage_by(conn, tenant, month, "meter", zone.key, CATALOGUE)
            open_count = await billing.open_intervals(conn, tenant, month)
        return {
            "rows": [{"meter": r["meter"], "quantity": r["quantity"]} for r in rows],
            "openIntervals": open_count,
        }

    @get("/v1/sessions")
    async def list_sessions(limit: int = 50) -> dict[str, Any]:
        async with pools[0].acquire() as conn:
            rooms = await sessions.room_sessions(conn, tenant, live=None, limit=limit)
            sids = [r["room_sid"] for r in rooms]
            dispatches = await sessions.dispatches_of(conn, tenant, sids)
            roomless = await sessions.roomless_dispatches(conn, tenant, live=None, limit=limit)
        return {
            "rooms": [dict(r) for r in rooms],
            "dispatches": [dict(d) for d in dispatches],
            "roomless": [dict(d) for d in roomless],
        }

    @get("/v1/sessions/{session_id:str}/timeline")
    async def get_timeline(session_id: str, after: int = 0, limit: int = 200) -> dict[str, Any]:
        async with pools[0].acquire() as conn:
            room = await sessions.room_session(conn, tenant, session_id)
            if room is not None:  # a room session: its own entries and its dispatches'
                joined = await sessions.dispatches_of(conn, tenant, [session_id])
                room_sid, ids = session_id, [d["dispatch_id"] for d in joined]
            else:  # a consultation: the dispatch's entries and its room session's
                dispatch = await sessions.dispatch(conn, tenant, session_id)
                if dispatch is None:
                    raise NotFoundException(f"no session {session_id!r}")
                room_sid, ids = dispatch["room_sid"] or "", [session_id]
                if room_sid:
                    room = await sessions.room_session(conn, tenant, room_sid)
            rows = await sessions.entries(
                conn, tenant, room_sid=room_sid, dispatch_ids=ids, after=after, limit=limit + 1
            )
        return {
            "room": dict(room) if room else None,
            "entries": [dict(r) for r in rows[:limit]],
            "more": len(rows) > limit,
        }

    @get("/healthz", sync_to_thread=False)
    def healthz() -> dict[str, str]:
        return {"status": "alive"}

    return Litestar(
        route_handlers=[
            get_agent,
            list_agents,
            get_room,
            get_appointment,
            get_usage,
            list_sessions,
            get_timeline,
            healthz,
        ],
        lifespan=[connected],
        debug=False,
    )


def main() -> None:
    host, port, tenant = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    settings = load_settings(env_file=None)
    app = create_app(settings.database_url, tenant, ZoneInfo(settings.billing_timezone))
    serve(app, host, port)


if __name__ == "__main__":
    main()
