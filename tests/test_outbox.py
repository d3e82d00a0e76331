"""The outbox against the real Postgres and NATS: per-key order with concurrent writers and
relays, a row it cannot decode set aside without stalling it, order kept when a publish fails,
and published rows pruned with the inbox after their keep time."""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import msgspec
import pytest
from nats.js.api import DiscardPolicy
from prometheus_client import REGISTRY

from deploy.stack import StackState, nats_part
from deploy.supervisor import Supervisor
from shared.bus import Bus, connect_bus
from shared.config import Settings
from shared.db import create_pool
from shared.events import TokenIssued
from shared.outbox import RELAY_LOCK_CLASS, add_to_outbox, outbox_state, relay_outbox
from shared.pruning import PRUNE_LOCK, Pruned, prune_bus_records
from shared.streams import stream_configs
from tests.support import eventually, free_port, private_database, watch


def set_aside_count() -> float:
    return REGISTRY.get_sample_value("mediai_outbox_set_aside_total") or 0.0


def issued(n: int) -> TokenIssued:
    return TokenIssued(
        room=f"room-{n}",
        identity="p1",
        can_publish=True,
        can_subscribe=True,
        ttl_seconds=60,
        expires_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


@pytest.fixture
async def database(stack: StackState, settings: Settings) -> AsyncIterator[Settings]:
    """Settings whose database is private: the stack's own relays never see these rows."""
    async with private_database(settings, "outbox") as url:
        yield msgspec.structs.replace(settings, database_url=url)


@pytest.fixture
async def pool(database: Settings) -> AsyncIterator[asyncpg.Pool]:
    created = await create_pool(database)
    yield created
    await created.close()


async def write(pool: asyncpg.Pool, tenant: str, key: str, n: int) -> str:
    async with pool.acquire() as conn, conn.transaction():
        event = await add_to_outbox(conn, issued(n), source="mediai/tests", tenant=tenant, key=key)
        # The rest of the transaction's work: its row stays invisible while later rows of other
        # transactions commit (the case that would reorder a key without the writers' lock).
        await conn.execute("SELECT pg_sleep($1)", random.random() / 100)
    return event.id


async def positions(pool: asyncpg.Pool) -> list[str]:
    return [
        r["event_id"] for r in await pool.fetch("SELECT event_id FROM outbox ORDER BY position")
    ]


async def test_a_keys_events_reach_the_stream_in_position_order(
    database: Settings, pool: asyncpg.Pool, bus: Bus
) -> None:
    """Two writers of one key, and three relays (each with its own NATS connection, as in three
    processes) started on a backlog while the writers go on; small batches, so relays that did
    not take turns would publish interleaved batches."""
    tenant, key, rounds = "t" + secrets.token_hex(5), "consult-1", 20

    async def writers(first: int) -> None:
        async def writer(start: int) -> None:
            for n in range(start, start + rounds):
                await write(pool, tenant, key, n)

        await asyncio.gather(writer(first), writer(first + 1000))

    async def relay(connection: Bus) -> None:
        while True:
            await relay_outbox(pool, connection, batch=3)
            await asyncio.sleep(0.005)  # a relay's pause between rounds, shortened

    # Three processes of one component: one source, so they take turns.
    connections = [await connect_bus(database, "tests", streams="skip") for _ in range(3)]
    try:
        async with watch(bus, TokenIssued, tenant=tenant) as seen:
            await writers(0)  # the backlog
            relaying = [asyncio.create_task(relay(c)) for c in connections]
            try:
                await writers(100)
                received = [(await seen.next()).id for _ in range(4 * rounds)]
            finally:
                for task in relaying:
                    task.cancel()
                await asyncio.gather(*relaying, return_exceptions=True)
    finally:
        for connection in connections:
            await connection.close()

    assert received == await positions(pool)
    assert seen.drain() == []  # each once


async def test_writers_of_one_key_take_turns_and_other_keys_do_not_wait(
    pool: asyncpg.Pool,
) -> None:
    """A key's next row gets its position only once the earlier writer of that key committed,
    so no relay can see it before a lower position of its key still in flight."""
    tenant = "t" + secrets.token_hex(5)
    async with pool.acquire() as first, first.transaction():
        held = await add_to_outbox(first, issued(1), source="mediai/tests", tenant=tenant, key="k")
        other_key = await write(pool, tenant, "other", 2)  # not held up
        second = asyncio.create_task(write(pool, tenant, "k", 3))

        async def waiting_for_the_key() -> bool:
            return bool(
                await pool.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                )
            )

        await eventually(waiting_for_the_key)
        assert not second.done()
    second_id = await asyncio.wait_for(second, 10)
    assert await positions(pool) == [held.id, other_key, second_id]


async def test_a_row_that_cannot_be_decoded_is_set_aside_and_the_rest_goes_on(
    database: Settings,
    pool: asyncpg.Pool,
    bus: Bus,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    tenant = "t" + secrets.token_hex(5)
    async with watch(bus, TokenIssued, tenant=tenant) as seen:
        before = await write(pool, tenant, "k", 1)
        bad = await pool.fetchval(
            "INSERT INTO outbox (event_id, payload, source)"
            " VALUES ('broken-1', 'not an event', 'mediai/tests')"
            " RETURNING position"
        )
        after = [await write(pool, tenant, "k", n) for n in (2, 3)]

        set_aside_before = set_aside_count()
        with caplog.at_level(logging.ERROR, logger="shared.outbox"):
            assert await relay_outbox(pool, bus) == 3
            assert [(await seen.next()).id for _ in range(3)] == [before, *after]
            # A relay process starting retries the row once; it still cannot be decoded.
            assert await relay_outbox(pool, bus, retry_set_aside=True) == 0

    [line] = [r.getMessage() for r in caplog.records if r.name == "shared.outbox"]
    assert set_aside_count() == set_aside_before + 1
    assert line.startswith(f"outbox row {bad} (event broken-1) set aside")
    assert "undecodable" in line
    state = await outbox_state(pool)
    assert (state.pending, state.set_aside_count) == (0, 1)
    assert state.set_aside[0].position == bad
    assert state.set_aside[0].reason.startswith("undecodable: JSON is malformed")

    shown = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "deploy", "streams"],
        env={
            "PATH": "/usr/bin:/bin",
            "MEDIAI_DATA_DIR": str(database.data_dir),  # the operator's NATS login is there
            "NATS_URL": database.nats_url,
            "DATABASE_URL": database.database_url,
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "outbox: 0 pending, 1 set aside" in shown.stdout
    assert f"set aside: position {bad}  event broken-1" in shown.stdout


@pytest.fixture
async def private_nats(database: Settings, tmp_path: Path) -> AsyncIterator[Settings]:
    """Its own NATS server: its event stream gets limits the shared one must not have."""
    port = free_port()
    settings = msgspec.structs.replace(
        database, data_dir=tmp_path, nats_port=port, nats_url=f"nats://127.0.0.1:{port}"
    )
    supervisor = Supervisor(settings.host, tmp_path / "logs")
    await supervisor.start(nats_part(settings))
    try:
        yield settings
    finally:
        await supervisor.stop()


async def test_a_failed_publish_stops_the_relay_and_the_order_is_kept(
    private_nats: Settings, pool: asyncpg.Pool
) -> None:
    bus = await connect_bus(private_nats, "tests", streams="skip")
    try:
        events = stream_configs(private_nats)[0]
        # A stream that is full and refuses more: a real rejection by the server mid-batch.
        await bus.js.add_stream(events.evolve(max_msgs=2, discard=DiscardPolicy.NEW))
        written = [await write(pool, "t1", "k", n) for n in range(4)]

        with pytest.raises(Exception, match="maximum messages exceeded"):
            await relay_outbox(pool, bus)
        published = await pool.fetch(
            "SELECT event_id FROM outbox WHERE published_at IS NOT NULL ORDER BY position"
        )
        assert [r["event_id"] for r in published] == written[:2]

        await bus.js.update_stream(events)  # room again, as an operator would make
        assert await relay_outbox(pool, bus) == 2
        stored = [
            (await bus.js.get_msg(str(events.name), sequence)).header or {}
            for sequence in range(1, 5)
        ]
        assert [headers["Nats-Msg-Id"] for headers in stored] == written
    finally:
        await bus.close()


async def test_one_relay_at_a_time(pool: asyncpg.Pool, bus: Bus) -> None:
    await write(pool, "t" + secrets.token_hex(5), "k", 1)
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))", RELAY_LOCK_CLASS, bus.source
        )
        assert await relay_outbox(pool, bus) is None  # another relay is at work
    assert await relay_outbox(pool, bus) == 1


async def test_a_relay_publishes_only_the_rows_of_its_own_component(
    database: Settings, pool: asyncpg.Pool, bus: Bus
) -> None:
    """Each component's NATS user may publish only its events, so its relay takes only its
    rows; another component's rows wait for that component's relay."""
    tenant = "t" + secrets.token_hex(5)
    async with pool.acquire() as conn, conn.transaction():
        other = await add_to_outbox(conn, issued(1), source="mediai/token", tenant=tenant, key="k")
    mine = await write(pool, tenant, "k", 2)
    assert await relay_outbox(pool, bus) == 1
    pending = await pool.fetch("SELECT event_id FROM outbox WHERE published_at IS NULL")
    assert other.id in {r["event_id"] for r in pending}
    assert mine not in {r["event_id"] for r in pending}
    await pool.execute("DELETE FROM outbox WHERE event_id = $1", other.id)


async def test_published_outbox_rows_and_old_inbox_rows_are_pruned(
    database: Settings, pool: asyncpg.Pool
) -> None:
    async def outbox_row(
        event_id: str, *, age: timedelta, published: bool, set_aside: bool
    ) -> None:
        await pool.execute(
            "INSERT INTO outbox (event_id, payload, source, created_at, published_at, set_aside_at)"
            " VALUES ($1, '{}', 'mediai/tests', now() - $2::interval,"
            " CASE WHEN $3 THEN now() - $2::interval END,"
            " CASE WHEN $4 THEN now() - $2::interval END)",
            event_id,
            age,
            published,
            set_aside,
        )

    await outbox_row("published-3h", age=timedelta(hours=3), published=True, set_aside=False)
    await outbox_row("published-30m", age=timedelta(minutes=30), published=True, set_aside=False)
    await outbox_row("pending-3h", age=timedelta(hours=3), published=False, set_aside=False)
    await outbox_row("set-aside-3h", age=timedelta(hours=3), published=False, set_aside=True)
    for event_id, age in (
        ("inbox-32d", timedelta(days=32)),
        ("inbox-30d12h", timedelta(days=30, hours=12)),
    ):
        await pool.execute(
            "INSERT INTO consumer_inbox (consumer, event_id, stream_sequence, processed_at)"
            " VALUES ('c', $1, 1, now() - $2::interval)",
            event_id,
            age,
        )

    async with pool.acquire() as holder, holder.transaction():
        await holder.execute("SELECT pg_advisory_xact_lock($1)", PRUNE_LOCK)
        assert await prune_bus_records(pool, database) is None  # another process is pruning

    assert await prune_bus_records(pool, database) == Pruned(outbox=1, inbox=1)
    assert set(await positions(pool)) == {"published-30m", "pending-3h", "set-aside-3h"}
    # Dead letters live 30 days: an inbox row a little older still recognises their replay.
    assert await pool.fetchval("SELECT array_agg(event_id) FROM consumer_inbox") == ["inbox-30d12h"]
