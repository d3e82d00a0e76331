"""Billing's usage cap at the dispatcher: over 100% of a monthly cap, POST /v1/agents is a 402."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import asyncpg
import httpx

from deploy.stack import StackState
from services.dispatcher.catalog import build_catalog
from services.dispatcher.core import (
    DispatchAgentRequest,
    DispatchRejectedError,
    UsageLimit,
    blocking_limits,
    decide_request,
    evolve_limit,
    limit_notice,
)
from services.dispatcher.limits import USAGE_LIMITS
from shared.bus import Bus
from shared.config import Settings
from shared.events import Envelope, envelope
from shared.events.agents import AgentUsageReported
from shared.events.billing import UsageLimitCleared, UsageLimitReached
from tests.billing_support import client, mediai, new_tenant
from tests.support import EventStream, watch

# A billing month as billing carries it: São Paulo's March 2026, [start, end) in UTC.
START = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
END = datetime(2026, 4, 1, 3, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 18, 14, 30, tzinfo=UTC)
TENANT = "tabcdefghij"
Notice = TypeVar("Notice", UsageLimitReached, UsageLimitCleared)
CATALOG = build_catalog(Settings())


def notice(
    kind: type[UsageLimitReached | UsageLimitCleared] = UsageLimitReached,
    *,
    threshold: int = 100,
    revision: int = 1,
    meter: str = "llm_prompt_tokens",
    start: datetime = START,
    end: datetime = END,
) -> Envelope:
    data = kind(
        meter=meter,
        threshold_percent=threshold,
        monthly_quantity=1000,
        quantity=1050,
        month="2026-03",
        period_start=start,
        period_end=end,
        revision=revision,
    )
    return envelope(data, source="mediai/billing", tenant=TENANT, subject=meter)


def limit(**fields: object) -> UsageLimit:
    projected = limit_notice(notice(**fields))  # type: ignore[arg-type]
    assert projected is not None
    return projected


def refusal(limits: list[UsageLimit], now: datetime = NOW) -> DispatchRejectedError | None:
    try:
        decide_request(
            DispatchAgentRequest(room="r1"),
            catalog=CATALOG,
            dispatch_id="d",
            now=now,
            deadline_seconds=5,
            usage_limits=limits,
        )
    except DispatchRejectedError as error:
        return error
    return None


# -- the pure decision ----------------------------------------------------------------------------


def test_a_cap_in_force_is_a_402_naming_the_meter_and_the_end_of_the_period() -> None:
    error = refusal([limit()])
    assert error is not None
    assert (error.status, error.code) == (402, "usage_limit_reached")
    assert "llm_prompt_tokens (1050 used, cap 1000)" in str(error)
    assert "2026-04-01T03:00:00Z" in str(error)
    assert error.details == [
        {
            "meter": "llm_prompt_tokens",
            "quantity": 1050,
            "monthlyQuantity": 1000,
            "periodStart": "2026-03-01T03:00:00Z",
            "periodEnd": "2026-04-01T03:00:00Z",
        }
    ]


def test_the_cap_holds_only_inside_its_month_and_until_cleared() -> None:
    assert refusal([limit()], now=START) is not None
    assert refusal([limit()], now=END - timedelta(microseconds=1)) is not None
    assert refusal([limit()], now=END) is None  # a new month starts clear
    assert refusal([limit()], now=START - timedelta(microseconds=1)) is None
    assert refusal([limit(kind=UsageLimitCleared, revision=2)]) is None
    assert refusal([]) is None


def test_every_meter_over_its_cap_is_named() -> None:
    error = refusal(
        [
            limit(meter="stt_audio"),
            limit(meter="llm_prompt_tokens"),
            limit(meter="video", kind=UsageLimitCleared),
        ]
    )
    assert error is not None
    named = "on llm_prompt_tokens (1050 used, cap 1000), stt_audio (1050 used, cap 1000);"
    assert named in str(error)
    assert [d["meter"] for d in error.details or []] == ["llm_prompt_tokens", "stt_audio"]


def test_80_percent_is_only_a_warning() -> None:
    assert limit_notice(notice(threshold=80)) is None
    assert limit_notice(notice(UsageLimitCleared, threshold=80)) is None
    assert limit().in_force and not limit(kind=UsageLimitCleared).in_force


def test_the_highest_revision_wins_in_any_delivery_order() -> None:
    told = [
        limit(revision=1),
        limit(kind=UsageLimitCleared, revision=2),
        limit(revision=3),
        limit(revision=3),
    ]  # the last one delivered twice
    for order in itertools.permutations(told):
        state = None
        for each in order:
            state = evolve_limit(state, each)
        assert state == limit(revision=3)
    cleared_last = [limit(revision=1), limit(kind=UsageLimitCleared, revision=2)]
    for order in itertools.permutations(cleared_last):
        state = None
        for each in order:
            state = evolve_limit(state, each)
        assert state is not None and blocking_limits([state], NOW) == []


# -- on the real stack ----------------------------------------------------------------------------


async def projected(bus: Bus, timeout: float = 15.0) -> None:
    """Wait until the dispatcher has applied and acknowledged every limit event published."""
    async with asyncio.timeout(timeout):
        while True:
            info = await bus.js.consumer_info(USAGE_LIMITS.stream, USAGE_LIMITS.durable)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                return
            await asyncio.sleep(0.02)  # another process's consumer, polled


async def cap(settings: Settings, tenant: str, monthly: int) -> None:
    """Set the tenant's monthly cap on prompt tokens, as an operator does."""
    code, _, err = await mediai(
        settings,
        "billing",
        "limit",
        "--tenant",
        tenant,
        "--meter",
        "llm_prompt_tokens",
        "--monthly",
        str(monthly),
    )
    assert code == 0, err


async def next_notice(notices: EventStream, kind: type[Notice]) -> tuple[Envelope, Notice]:
    """The next ``kind`` notice at 100% (billing also announces 80%), and its data."""
    while True:
        event = await notices.next(timeout=20)
        if isinstance(event.data, kind) and event.data.threshold_percent == 100:
            return event, event.data


@asynccontextmanager
async def dispatched(http: httpx.AsyncClient) -> AsyncIterator[httpx.Response]:
    """POST /v1/agents; a dispatch that was accepted is cancelled at once (no agent needed)."""
    response = await http.post("/v1/agents", json={"room": "capped-room", "role": "generic"})
    try:
        yield response
    finally:
        if response.status_code == 202:
            ended = await http.delete(f"/v1/agents/{response.json()['id']}")
            assert ended.status_code in (200, 202), ended.text


async def test_crossing_the_cap_refuses_dispatches_until_it_is_raised(
    stack: StackState, bus: Bus, pool: asyncpg.Pool, settings: Settings
) -> None:
    # Fresh tenants: blocking the development tenant would fail other tests of the session.
    tenant, key = await new_tenant(pool, "Capped clinic")
    _, other_key = await new_tenant(pool, "Uncapped clinic")
    await cap(settings, tenant, 1000)
    async with (
        client(stack, key) as http,
        client(stack, other_key) as other,
        watch(bus, UsageLimitReached, UsageLimitCleared, tenant=tenant) as notices,
    ):
        async with dispatched(http) as response:
            assert response.status_code == 202, response.text

        now = datetime.now(UTC)
        await bus.publish(
            AgentUsageReported(
                dispatch_id="d-capped",
                room="capped-room",
                role="generic",
                period_start=now,
                period_end=now + timedelta(seconds=15),
                llm_prompt_tokens=1200,
            ),
            tenant=tenant,
            key="d-capped",
        )
        reached_event, reached = await next_notice(notices, UsageLimitReached)
        seen = time.monotonic()
        await projected(bus)
        print(f"\nUsageLimitReached seen -> dispatcher projected: {time.monotonic() - seen:.3f}s")
        async with dispatched(http) as response:
            assert response.status_code == 402, response.text
            error = response.json()["error"]
            assert error["code"] == "usage_limit_reached"
            ends = reached.period_end.astimezone(UTC).isoformat().replace("+00:00", "Z")
            assert "llm_prompt_tokens (1200 used, cap 1000)" in error["message"]
            assert ends in error["message"]
            assert error["details"][0]["periodEnd"] == ends
        standing = (await http.get("/v1/usage/limits")).json()
        assert standing["dispatchBlocked"] is True  # billing agrees
        async with dispatched(other) as response:  # another clinic is not affected
            assert response.status_code == 202, response.text

        await cap(settings, tenant, 2000)
        _, cleared = await next_notice(notices, UsageLimitCleared)
        assert cleared.revision > reached.revision
        await projected(bus)
        async with dispatched(http) as response:
            assert response.status_code == 202, response.text

        # The old notice delivered again, late and under a new id: the higher revision stands.
        await bus.publish(reached, tenant=tenant, key=reached_event.subject)
        await projected(bus)
        async with dispatched(http) as response:
            assert response.status_code == 202, response.text
