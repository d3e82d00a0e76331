"""A stopping service's database pool (shared/db.py) against the real PostgreSQL."""

from __future__ import annotations

import logging

import asyncpg
import pytest

from deploy.stack import StackState
from shared.config import Settings
from shared.db import close_pool, create_pool


async def test_a_connection_still_held_does_not_hold_the_close_forever(
    stack: StackState, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    pool = await create_pool(settings)
    held = await pool.acquire()  # a task that never gives it back
    with caplog.at_level(logging.WARNING, logger="shared.db"):
        await close_pool(pool, timeout=0.5)
    assert pool.is_closing()
    with pytest.raises(asyncpg.InterfaceError):  # taken from the task that held it
        await held.fetchval("SELECT 1")
    assert "connections still in use" in caplog.text


async def test_a_pool_whose_connections_are_back_closes_quietly(
    stack: StackState, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    pool = await create_pool(settings)
    async with pool.acquire() as connection:
        assert await connection.fetchval("SELECT 1") == 1
    with caplog.at_level(logging.WARNING, logger="shared.db"):
        await close_pool(pool, timeout=5)
    assert pool.is_closing()
    assert "connections still in use" not in caplog.text
