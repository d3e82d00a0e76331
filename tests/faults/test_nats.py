"""NATS SIGKILLed in the middle of a burst of 2,000 signed webhooks, then started again: no
webhook answered 2xx is missing from the stream, and the consumers resume within 15 s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.rooms.projection import READ_MODEL
from shared.events.rooms import ParticipantJoined
from tests.faults.support import (
    OUTAGE_SECONDS,
    FaultStack,
    Figures,
    Sent,
    dead_letters,
    fault_stack,
    inbox_count,
    now_seconds,
    participant_hook,
    send_all,
    stored_events,
    unique,
)
from tests.support import eventually, until

BURST = 2000
KILL_AFTER = 600  # acknowledged webhooks before the kill
RESUME_BUDGET_SECONDS = 15.0


@pytest.fixture(scope="module")
async def faulty() -> AsyncIterator[FaultStack]:
    # No LiveKit: the webhooks are the test's own, signed as LiveKit signs them, and the rooms
    # reconciler (which would ask LiveKit) is off.
    async with fault_stack(
        ["webhooks", "rooms"],
        livekit_local=False,
        livekit_url="ws://127.0.0.1:9",
        rooms_reconcile_interval=0,
    ) as running:
        yield running


async def test_nats_sigkill_mid_burst_loses_no_acknowledged_webhook(faulty: FaultStack) -> None:
    settings, supervisor = faulty.settings, faulty.supervisor
    at = now_seconds()
    rooms = [unique("room") for _ in range(20)]
    hooks = [
        participant_hook(
            "participant_joined", faulty.tenant, rooms[i % 20], unique("PA"), at=at, joined_at=at
        )
        for i in range(BURST)
    ]
    ids = [hook.id for hook in hooks]
    sent = Sent()
    pool = await asyncpg.connect(settings.database_url)
    nc, js = await faulty.js()
    try:
        async with faulty.client(authenticated=False) as client:
            burst = asyncio.create_task(send_all(client, hooks, settings, sent, concurrency=16))
            await until(lambda: len(sent.acknowledged) >= KILL_AFTER, timeout=120)
            killed_pid = supervisor.pid("nats")
            await supervisor.kill("nats")
            acknowledged_at_kill = len(sent.acknowledged)
            await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself: NATS stays dead this long
            applied_at_restart = await inbox_count(pool, READ_MODEL.durable, ids)
            restarted = time.monotonic()  # recovery counts NATS's own start too
            await supervisor.start_again("nats")
            assert supervisor.pid("nats") not in (None, killed_pid)

            async def resumed() -> bool:
                return await inbox_count(pool, READ_MODEL.durable, ids) > applied_at_restart

            # The consumers resume: the read model applies events again soon after the restart.
            await eventually(resumed, timeout=RESUME_BUDGET_SECONDS, step=0.1)
            resumed_after = time.monotonic() - restarted
            await asyncio.wait_for(burst, timeout=300)

        async def caught_up() -> bool:
            return await inbox_count(pool, READ_MODEL.durable, sent.acknowledged) == len(
                sent.acknowledged
            )

        await eventually(caught_up, timeout=120)
        recovery = time.monotonic() - restarted
        stored = {e.id for e in await stored_events(js, ParticipantJoined, faulty.tenant)}
        rows = await pool.fetchval(
            "SELECT count(*) FROM room_participants WHERE sid = ANY($1::text[])",
            [hook.participant.sid for hook in hooks if hook.id in set(sent.acknowledged)],
        )
        lost = [i for i in sent.acknowledged if i not in stored]
        figures = Figures(
            "nats-sigkill-mid-burst",
            sent=len(sent.sent),
            acknowledged=len(sent.acknowledged),
            stored=len(stored & set(ids)),
            applied={"rooms": await inbox_count(pool, READ_MODEL.durable, ids)},
            dead_lettered=await dead_letters(js),
            recovery_seconds=recovery,
            extra={
                "acked_at_kill": acknowledged_at_kill,
                "applied_at_restart": applied_at_restart,
                "resumed": f"{resumed_after:.1f}s",
                "answers": dict(sorted(sent.statuses.items())),
                "lost": len(lost),
            },
        )
        figures.report()
    finally:
        await pool.close()
        await nc.close()
    assert not lost, f"{len(lost)} webhooks answered 2xx are missing from the stream"
    assert len(sent.acknowledged) == BURST  # every webhook was taken in the end (LiveKit retries)
    assert stored == set(ids)  # each once: the stream has exactly the webhooks sent
    assert resumed_after <= RESUME_BUDGET_SECONDS
    assert rows == BURST
    assert figures.dead_lettered == 0
