"""Numbered SQL migrations applied by one runner against the real Postgres."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg
import pytest

from deploy.stack import StackState
from shared.config import Settings
from shared.db import Migration, MigrationError, apply_migrations, discover_migrations


@pytest.fixture
async def empty_database(stack: StackState, settings: Settings) -> str:
    name = f"migrations_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(settings.database_url.rsplit("/", 1)[0] + "/postgres")
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return settings.database_url.rsplit("/", 1)[0] + f"/{name}"


def test_every_component_numbers_its_migrations_from_one() -> None:
    migrations = discover_migrations()
    assert migrations[0].component == "shared" and migrations[0].version == 1
    by_component: dict[str, list[int]] = {}
    for migration in migrations:
        by_component.setdefault(migration.component, []).append(migration.version)
    for component, versions in by_component.items():
        assert versions == list(range(1, len(versions) + 1)), component


async def test_migrations_apply_once_even_when_two_runners_race(empty_database: str) -> None:
    migrations = discover_migrations()
    first, second = await asyncpg.connect(empty_database), await asyncpg.connect(empty_database)
    try:
        results = await asyncio.gather(
            apply_migrations(first, migrations), apply_migrations(second, migrations)
        )
        assert sorted(len(r) for r in results) == [0, len(migrations)]
        assert await apply_migrations(first, migrations) == []
        assert await first.fetchval("SELECT count(*) FROM schema_migrations") == len(migrations)
        assert await first.fetchval("SELECT to_regclass('tenants') IS NOT NULL")
    finally:
        await first.close()
        await second.close()


async def test_a_changed_applied_migration_is_refused(empty_database: str) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        original = Migration("demo", 1, "0001_demo", "CREATE TABLE demo (id int);")
        await apply_migrations(conn, [original])
        edited = Migration("demo", 1, "0001_demo", "CREATE TABLE demo (id bigint);")
        with pytest.raises(MigrationError, match="changed after it was applied"):
            await apply_migrations(conn, [edited])
    finally:
        await conn.close()


async def test_a_failing_migration_leaves_nothing_half_applied(empty_database: str) -> None:
    conn = await asyncpg.connect(empty_database)
    try:
        broken = Migration("demo", 1, "0001_broken", "CREATE TABLE half (id int); SELECT nope;")
        with pytest.raises(asyncpg.PostgresError):
            await apply_migrations(conn, [broken])
        assert await conn.fetchval("SELECT to_regclass('half') IS NULL")
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 0
    finally:
        await conn.close()
