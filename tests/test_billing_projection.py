"""The live usage projection against the real stack: totals, duplicates, order, a killed consumer."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest

from deploy.stack import StackState, child_environ
from shared.bus import Bus
from shared.config import Settings
from shared.events import DeadLettered
from shared.events.agents import AgentUsageReported
from tests import billing_script as script
from tests.billing_support import caught_up, client, new_tenant, publish, usage_totals
from tests.support import eventually, watch

DAY = "2001-03-10"
REPO = Path(__file__).resolve().parent.parent


async def test_a_scripted_consultation_projects_to_the_hand_computed_totals(
    stack: StackState, bus: Bus, pool: asyncpg.Pool
) -> None:
    tenant, key = await new_tenant(pool)
    await publish(bus, script.envelopes(tenant))
    await caught_up(bus)
    async with client(stack, key) as http:
        assert await usage_totals(http, DAY, DAY) == script.TOTALS
        report = (await http.get("/v1/usage", params={"from": DAY, "to": DAY})).json()
        assert report["openIntervals"] == script.OPEN_INTERVALS
        assert report["groupBy"] == "meter" and report["timezone"] == "America/Sao_Paulo"
        rooms = (
            await http.get("/v1/usage", params={"from": DAY, "to": DAY, "group_by": "room"})
        ).json()["rows"]
        assert {row["group"] for row in rooms} == {script.ROOM}
        dispatches = (
            await http.get("/v1/usage", params={"from": DAY, "to": DAY, "group_by": "dispatch"})
        ).json()["rows"]
        by_dispatch = {(r["group"], r["meter"]): r["quantity"] for r in dispatches}
        assert by_dispatch[(script.DISPATCH, "agent_session")] == 55_000
        assert by_dispatch[("", "participant_time")] == 315_000
        days = (
            await http.get("/v1/usage", params={"from": DAY, "to": DAY, "group_by": "day"})
        ).json()["rows"]
        assert {row["group"] for row in days} == {DAY}
        # An instant range: only the 13:01 minute.
        minute = await usage_totals(http, "2001-03-10T13:01:00Z", "2001-03-10T13:02:00Z")
        assert minute["participant_time"] == script.PARTICIPANT_WINDOWS[script.at("13:01:00")]
        bad = await http.get("/v1/usage", params={"from": "soon", "to": DAY})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_period"


async def test_the_same_events_twice_and_shuffled_give_the_same_totals(
    stack: StackState, bus: Bus, pool: asyncpg.Pool
) -> None:
    tenant, key = await new_tenant(pool)
    events = script.envelopes(tenant)
    rng = random.Random(42)
    delivered = events + rng.sample(events, 6)  # six events land in the stream twice
    rng.shuffle(delivered)
    sequences = await publish(bus, delivered)
    assert len(set(sequences)) == len(delivered)
    await caught_up(bus)
    async with client(stack, key) as http:
        assert await usage_totals(http, DAY, DAY) == script.TOTALS


async def test_usage_is_tenant_scoped(stack: StackState, bus: Bus, pool: asyncpg.Pool) -> None:
    tenant, _ = await new_tenant(pool)
    _, other_key = await new_tenant(pool, "Other clinic")
    await publish(bus, script.envelopes(tenant))
    await caught_up(bus)
    async with client(stack, other_key) as http:
        assert await usage_totals(http, DAY, DAY) == {}
    async with httpx.AsyncClient(base_url=stack.gateway_url) as anonymous:
        assert (await anonymous.get("/v1/usage")).status_code == 401


async def test_impossible_usage_is_dead_lettered_not_counted(
    stack: StackState, bus: Bus, pool: asyncpg.Pool
) -> None:
    tenant, key = await new_tenant(pool)
    bad = AgentUsageReported(
        dispatch_id="d",
        room="r",
        role="intake",
        period_start=script.at("10:00:00"),
        period_end=script.at("10:00:15"),
        llm_prompt_tokens=-5,
    )
    async with watch(bus, DeadLettered) as letters:
        [event] = script.envelopes(tenant, [bad])
        await publish(bus, [event])
        letter = await letters.wait_for(lambda e: e.data.original_event_id == event.id)
    assert letter.data.consumer == "billing-usage" and "negative" in letter.data.reason
    await caught_up(bus)
    async with client(stack, key) as http:
        assert await usage_totals(http, DAY, DAY) == {}


# ---------------------------------------------------------------------------------------------
# A consumer killed midway


class BillingProcess:
    """The stack's billing service, which a test may kill (SIGKILL) and start again."""

    def __init__(self, stack: StackState, settings: Settings) -> None:
        self.settings = settings
        self.pid = next(p.pid for p in stack.parts if p.name == "billing")
        self.replacement: asyncio.subprocess.Process | None = None

    async def kill(self) -> None:
        assert self.pid is not None
        os.killpg(self.pid, signal.SIGKILL)
        await self._until(lambda ready: not ready)

    async def start(self) -> None:
        log = (self.settings.data_dir / "logs" / "billing-restarted.log").open("ab")
        self.replacement = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "deploy",
            "serve",
            "billing",
            env={**os.environ, **child_environ(self.settings)},
            cwd=REPO,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        self.pid = self.replacement.pid
        await self._until(lambda ready: ready)

    async def _until(self, wanted: Callable[[bool], bool], timeout: float = 30.0) -> None:
        url = f"http://{self.settings.host}:{self.settings.billing_port}/readyz"
        async with httpx.AsyncClient(timeout=1) as http:

            async def changed() -> bool:
                try:
                    ready = (await http.get(url)).status_code == 200
                except httpx.HTTPError:
                    ready = False
                return wanted(ready)

            await eventually(changed, timeout, step=0.1)

    async def stop(self) -> None:
        if self.replacement is not None and self.replacement.returncode is None:
            os.killpg(self.replacement.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.replacement.wait(), 10)
            except TimeoutError:
                os.killpg(self.replacement.pid, signal.SIGKILL)
                await self.replacement.wait()


@pytest.fixture(scope="session")
async def billing_process(stack: StackState, settings: Settings) -> AsyncIterator[BillingProcess]:
    # Session scope: a restarted service keeps serving the rest of the session.
    process = BillingProcess(stack, settings)
    yield process
    await process.stop()


async def test_a_consumer_killed_midway_and_restarted_counts_everything_once(
    stack: StackState, bus: Bus, pool: asyncpg.Pool, billing_process: BillingProcess
) -> None:
    tenant, key = await new_tenant(pool)
    reports = [
        AgentUsageReported(
            dispatch_id=f"d{n % 7}",
            room=f"room-{n % 5}",
            role="intake",
            period_start=script.at("14:00:00") + timedelta(seconds=15 * n),
            period_end=script.at("14:00:15") + timedelta(seconds=15 * n),
            llm_prompt_tokens=n,
            session_seconds=15.0,
        )
        for n in range(1, 2401)
    ]
    events = script.envelopes(tenant, reports)
    await caught_up(bus)
    before = await pool.fetchval(
        "SELECT coalesce(max(stream_sequence), 0) FROM consumer_inbox"
        " WHERE consumer = 'billing-usage'"
    )
    await publish(bus, events)

    async def some_applied() -> bool:
        applied: int = await pool.fetchval(
            "SELECT count(*) FROM consumer_inbox WHERE consumer = 'billing-usage'"
            " AND stream_sequence > $1",
            before,
        )
        return applied >= 200

    await eventually(some_applied, 60, step=0.01)
    await billing_process.kill()
    midway = await pool.fetchval(
        "SELECT count(*) FROM consumer_inbox WHERE consumer = 'billing-usage'"
        " AND stream_sequence > $1",
        before,
    )
    assert 200 <= midway < len(events), "the kill should land mid-stream"
    await billing_process.start()
    await caught_up(bus, timeout=120)
    async with client(stack, key) as http:
        totals = await usage_totals(http, DAY, DAY)
    assert totals == {"llm_prompt_tokens": sum(range(1, 2401)), "agent_session": 2400 * 15_000}
