"""The supervision of a service's background tasks (shared/background.py), on plain asyncio."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shared.background import BackgroundTask, TaskHealth, supervise


async def test_a_cancelled_task_finishes_its_cleanup_before_its_supervision_ends() -> None:
    """The service closes the bus and the database pool once the supervisions have ended: a
    task still cleaning up after that (unsubscribing, giving back a connection) held the pool's
    close until the stop's SIGKILL."""
    started, release, cleaned = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def consume(_: Any) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            await release.wait()  # a cleanup that awaits something of its own
            cleaned.set()

    supervision = asyncio.create_task(
        supervise(BackgroundTask("consumer", consume), None, TaskHealth("consumer"))
    )
    await asyncio.wait_for(started.wait(), timeout=5)
    supervision.cancel()
    done, _ = await asyncio.wait({supervision}, timeout=0.2)
    assert not done, "the supervision ended while its task was still cleaning up"
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(supervision, timeout=5)
    assert cleaned.is_set()
