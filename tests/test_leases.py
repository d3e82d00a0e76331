"""Leases (shared.leases): one holder at a time across processes, and a killed holder's lease is
free at once, with no time-to-live to wait out."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import asyncpg

from shared import leases
from shared.config import Settings

HOLDER = """
import asyncio, sys
import asyncpg
from shared import leases

async def main() -> None:
    conn = await asyncpg.connect(sys.argv[1])
    async with conn.transaction():
        assert await leases.take(conn, leases.INVOICE_SCHEDULE)
        print("held", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


def test_every_lease_has_its_own_key() -> None:
    assert len({lease.key for lease in leases.ALL}) == len(leases.ALL)
    assert len({lease.name for lease in leases.ALL}) == len(leases.ALL)


async def test_one_holder_at_a_time_and_a_killed_holder_frees_it_at_once(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        settings.database_url,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ},
    )
    try:
        assert holder.stdout is not None
        assert await asyncio.wait_for(holder.stdout.readline(), 20) == b"held\n"
        ran: list[str] = []

        async def job(app: object) -> None:
            ran.append("ran")

        class App:
            class state:
                pass

        App.state.pool = pool  # type: ignore[attr-defined]
        await leases.elected(leases.INVOICE_SCHEDULE, job)(App)
        assert ran == []  # the other process holds the lease: this turn is skipped
        async with leases.lease(pool, leases.CLINICAL_RETENTION) as other:
            assert other  # another lease is independent

        os.kill(holder.pid, signal.SIGKILL)
        await holder.wait()
        # PostgreSQL ends the dead client's session when it notices the closed socket: at once.
        async with asyncio.timeout(10):
            while not ran:
                await leases.elected(leases.INVOICE_SCHEDULE, job)(App)
                await asyncio.sleep(0.05)
        assert ran == ["ran"]
    finally:
        if holder.returncode is None:
            holder.kill()
            await holder.wait()
