"""A room's dispatches are read by the room, not by walking the tenant's history (real
PostgreSQL, the dispatcher's own query, under a generic plan: what a pooled connection may
settle on after five runs of a prepared statement)."""

from __future__ import annotations

import uuid

import asyncpg

from services.dispatcher import store

OTHERS = 3000  # the tenant's dispatches in other rooms
RUNS = 4


async def test_a_rooms_list_reads_that_rooms_dispatches(
    pool: asyncpg.Pool, fresh_tenant: str
) -> None:
    tenant = fresh_tenant
    rooms = [f"sala-{i % 300}" for i in range(OTHERS)] + ["consulta"] * 3
    await pool.executemany(
        "INSERT INTO agent_dispatches (dispatch_id, tenant_id, room, role, state, language,"
        " requested_at, deadline_at) VALUES ($1, $2, $3, 'generic', 'failed', 'pt-BR',"
        " now() - make_interval(secs => $4), now())",
        [(uuid.uuid4().hex, tenant, room, OTHERS - i) for i, room in enumerate(rooms)],
    )
    await pool.execute("ANALYZE agent_dispatches")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        for _ in range(RUNS):
            found = await store.list_for_tenant(
                conn,  # type: ignore[arg-type]
                tenant,
                room="consulta",
                state=None,
                limit=100,
            )
        read = await conn.fetchval(
            "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables"
            " WHERE relid = 'agent_dispatches'::regclass"
        )
    assert [d.room for d in found] == ["consulta"] * 3
    assert read // RUNS <= 10, f"{read // RUNS} rows read for a room of 3 among {OTHERS + 3}"
