"""LiveKit SIGKILLed and started again while the rooms API and its reconciler run: the API
answers 503 meanwhile (never 500, never past its timeout), then the read model equals what
LiveKit lists again (a dev-mode LiveKit forgets its rooms when it restarts)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from livekit import api as lk

from tests.faults.support import (
    ANSWER_BUDGET_SECONDS,
    OUTAGE_SECONDS,
    FaultStack,
    Figures,
    fault_stack,
    unique,
)
from tests.support import eventually

pytestmark = pytest.mark.livekit

ROOMS_BEFORE = 4


@pytest.fixture(scope="module")
async def faulty() -> AsyncIterator[FaultStack]:
    async with fault_stack(["rooms", "webhooks"], rooms_reconcile_interval=1) as running:
        yield running


async def open_rooms(http: httpx.AsyncClient) -> set[str]:
    answer = await http.get("/v1/rooms")
    assert answer.status_code == 200, answer.text
    return {room["name"] for room in answer.json()["rooms"]}


async def livekit_rooms(livekit: lk.LiveKitAPI, tenant: str) -> set[str]:
    listing = await livekit.room.list_rooms(lk.ListRoomsRequest())
    prefix = f"{tenant}~"
    return {r.name.removeprefix(prefix) for r in listing.rooms if r.name.startswith(prefix)}


async def test_livekit_killed_and_restarted_the_api_says_503_then_the_read_model_heals(
    faulty: FaultStack,
) -> None:
    settings, supervisor = faulty.settings, faulty.supervisor
    answers: list[tuple[int, float]] = []
    created: list[str] = []
    stop = asyncio.Event()

    async def create_rooms(http: httpx.AsyncClient) -> None:
        """Create rooms through the API, one after another, until ``stop``."""
        while not stop.is_set():
            name = unique("room").replace("_", "-")
            began = time.monotonic()
            try:
                answer = await http.post("/v1/rooms", json={"name": name})
                status = answer.status_code
            except httpx.TimeoutException:
                status = 0
            answers.append((status, time.monotonic() - began))
            if status in (200, 201):
                created.append(name)
            await asyncio.sleep(0.3)

    async with (
        faulty.client(timeout=ANSWER_BUDGET_SECONDS + 10) as http,
        lk.LiveKitAPI(
            settings.livekit_url, settings.livekit_api_key, settings.livekit_api_secret
        ) as livekit,
    ):
        for _ in range(ROOMS_BEFORE):
            name = unique("before").replace("_", "-")
            assert (await http.post("/v1/rooms", json={"name": name})).status_code == 201
        before = await open_rooms(http)
        assert len(before) == ROOMS_BEFORE
        assert await livekit_rooms(livekit, faulty.tenant) == before
        creator = asyncio.create_task(create_rooms(http))
        await asyncio.sleep(1.0)  # rooms created while LiveKit is up, by design
        at_kill = len(answers)
        await supervisor.kill("livekit")
        await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself
        during = answers[at_kill:]
        restarted = time.monotonic()
        await supervisor.start_again("livekit")

        after_restart = len(answers)

        async def created_again() -> bool:
            return any(status in (200, 201) for status, _ in answers[after_restart:])

        await eventually(created_again, timeout=30)
        stop.set()
        await creator

        async def in_step() -> set[str] | None:
            """The open rooms once the read model lists exactly what LiveKit lists."""
            model, live = await open_rooms(http), await livekit_rooms(livekit, faulty.tenant)
            return model if model == live else None

        healed = await eventually(in_step, timeout=60, step=0.5)
        recovery = time.monotonic() - restarted

    unavailable = sum(1 for status, _ in during if status == 503)
    wrong = [
        (status, seconds)
        for status, seconds in answers
        if status not in (200, 201, 503) or seconds > ANSWER_BUDGET_SECONDS
    ]
    Figures(
        "livekit-killed",
        sent=len(answers),
        acknowledged=sum(1 for status, _ in answers if status in (200, 201)),
        stored=len(healed),
        applied={"rooms": len(healed)},
        recovery_seconds=recovery,
        extra={"api_503": unavailable, "api_wrong": len(wrong), "rooms_before": len(before)},
    ).report()
    assert not wrong, f"answers while LiveKit was away (status, seconds): {wrong[:5]}"
    assert unavailable > 0 and all(status == 503 for status, _ in during[1:])
    # The dev-mode LiveKit came back empty: the rooms it lost were finished in the read model,
    # and those created since are in both.
    assert not healed & before
    assert healed
