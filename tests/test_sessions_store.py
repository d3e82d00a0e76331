"""A session's page of timeline entries reads that session's entries, not the tenant's history
(real PostgreSQL, the sessions service's own query, as a long-lived connection runs it: once
prepared, Postgres may settle on a generic plan after five runs: the test makes it use one)."""

from __future__ import annotations

import uuid

import asyncpg

from services.sessions import store

OTHERS = 3000  # entries of the tenant's other consultations
RUNS = 4


async def add_entries(pool: asyncpg.Pool, tenant: str, rows: list[tuple[str, str]]) -> None:
    """Entries (room SID, dispatch id) of ``tenant``, in this order."""
    await pool.executemany(
        "INSERT INTO timeline_entries (tenant_id, key, kind, at, room_sid, dispatch_id, data)"
        " VALUES ($1, $2, 'note', now(), $3, $4, '{}')",
        [(tenant, uuid.uuid4().hex, room, dispatch) for room, dispatch in rows],
    )


async def rows_read(
    pool: asyncpg.Pool, tenant: str, room_sid: str, dispatch_ids: list[str]
) -> tuple[list[tuple[str, str]], int]:
    """The page's (room SID, dispatch id) pairs, and the table rows Postgres read per page."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        for _ in range(RUNS):
            page = await store.entries(
                conn, tenant, room_sid=room_sid, dispatch_ids=dispatch_ids, after=0, limit=201
            )
        read = await conn.fetchval(
            "SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables"
            " WHERE relid = 'timeline_entries'::regclass"
        )
    return [(r["room_sid"], r["dispatch_id"]) for r in page], read // RUNS


async def test_a_page_reads_its_sessions_entries_only(
    pool: asyncpg.Pool, fresh_tenant: str
) -> None:
    tenant = fresh_tenant
    others = [(f"RM_other{i % 50}", f"other-{i}") for i in range(OTHERS)]
    ours = [("", "ours"), ("RM_ours", ""), ("RM_ours", "ours"), ("RM_ours", "joined")]
    await add_entries(pool, tenant, others[: OTHERS // 2] + ours + others[OTHERS // 2 :])
    await pool.execute("ANALYZE timeline_entries")

    page, read = await rows_read(pool, tenant, "", ["ours"])  # a consultation never in a room
    assert page == [("", "ours"), ("RM_ours", "ours")]
    assert read <= 10, f"{read} rows read for a page of 2 among {OTHERS + 4}"

    page, read = await rows_read(pool, tenant, "RM_ours", ["ours", "joined"])  # a room session
    assert page == ours
    assert read <= 10, f"{read} rows read for a page of 4 among {OTHERS + 4}"
