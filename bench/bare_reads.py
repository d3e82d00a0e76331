"""The baseline of the read benchmark: what a user would build without MediAI.

A bare Litestar app answering ``GET /v1/agents/{id}`` and ``GET /v1/agents?room=`` from the
same table with the same SQL as the dispatcher (asyncpg, a pool of the same size), the same
public fields in camelCase, served by uvicorn exactly as ``mediai serve`` serves a service
(uvloop, httptools, no access log). No API key, no tenant lookup, no tracing, no metrics: the
tenant is fixed on the command line.

Run: python -m bench.bare_reads HOST PORT TENANT (bench.read_throughput starts it; the database
from MEDIAI_DATABASE_URL).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from litestar import Litestar, get
from litestar.exceptions import NotFoundException

from bench.bare import serve
from shared.config import load_settings

PRIVATE = ("tenant_id", "livekit_dispatch_id", "worker_id", "updated_at")


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(word.title() for word in rest)


def _public(row: asyncpg.Record) -> dict[str, Any]:
    fields = {_camel(k): v for k, v in row.items() if k not in PRIVATE}
    fields["id"] = fields.pop("dispatchId")
    return fields


def create_app(database_url: str, tenant: str) -> Litestar:
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
        rows = await pools[0].fetch(
            "SELECT * FROM agent_dispatches WHERE tenant_id = $1"
            " AND ($2::text IS NULL OR room = $2) ORDER BY requested_at DESC LIMIT $3",
            tenant,
            room,
            limit,
        )
        return [_public(r) for r in rows]

    @get("/healthz", sync_to_thread=False)
    def healthz() -> dict[str, str]:
        return {"status": "alive"}

    return Litestar(
        route_handlers=[get_agent, list_agents, healthz], lifespan=[connected], debug=False
    )


def main() -> None:
    host, port, tenant = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    app = create_app(load_settings(env_file=None).database_url, tenant)
    serve(app, host, port)


if __name__ == "__main__":
    main()
