"""Monthly caps per meter: 80% and 100% announced as events, kept as a read model."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg

from deploy.stack import StackState
from services.billing.periods import month_of
from shared.bus import Bus
from shared.config import Settings
from shared.events import Envelope
from shared.events.agents import AgentUsageReported
from shared.events.billing import UsageLimitCleared, UsageLimitReached
from tests import billing_script as script
from tests.billing_support import caught_up, client, mediai, new_tenant, publish
from tests.support import EventStream, watch


def tokens(amount: int, when: datetime) -> AgentUsageReported:
    return AgentUsageReported(
        dispatch_id="d-cap",
        room="r-cap",
        role="intake",
        period_start=when,
        period_end=when + timedelta(seconds=15),
        llm_prompt_tokens=amount,
    )


async def next_notice(notices: EventStream) -> tuple[str, int, int]:
    event: Envelope = await notices.next(timeout=15)
    return type(event.data).__name__, event.data.threshold_percent, event.data.revision


async def test_crossing_80_and_100_percent_is_announced_once_and_cleared_by_a_raised_cap(
    stack: StackState, bus: Bus, pool: asyncpg.Pool, settings: Settings
) -> None:
    tenant, key = await new_tenant(pool)
    now = datetime.now(UTC)
    month = month_of(now, ZoneInfo(settings.billing_timezone))
    code, out, err = await mediai(
        settings,
        "billing",
        "limit",
        "--tenant",
        tenant,
        "--meter",
        "llm_prompt_tokens",
        "--monthly",
        "1000",
    )
    assert code == 0, err
    assert "mediai.usage_limit.set.v1" in out
    async with (
        client(stack, key) as http,
        watch(bus, UsageLimitReached, UsageLimitCleared, tenant=tenant) as notices,
    ):

        async def use(amount: int) -> dict[str, object]:
            await publish(bus, script.envelopes(tenant, [tokens(amount, now)]))
            await caught_up(bus)
            return (await http.get("/v1/usage/limits")).json()  # type: ignore[no-any-return]

        standing = await use(700)
        assert standing["dispatchBlocked"] is False
        assert standing["limits"] == [
            {
                "meter": "llm_prompt_tokens",
                "unit": "token",
                "monthlyQuantity": 1000,
                "quantity": 700,
                "reached": [],
            }
        ]
        await use(150)  # 850: 80% of the cap
        assert await next_notice(notices) == ("UsageLimitReached", 80, 1)
        standing = await use(200)  # 1050: over the cap
        reached = await notices.next(timeout=15)
        assert (type(reached.data).__name__, reached.data.threshold_percent) == (
            "UsageLimitReached",
            100,
        )
        assert reached.data.quantity == 1050 and reached.data.monthly_quantity == 1000
        assert (reached.data.period_start, reached.data.period_end) == month
        assert reached.data.period_start <= now < reached.data.period_end
        assert standing["dispatchBlocked"] is True
        assert standing["limits"][0]["reached"] == [80, 100]  # type: ignore[index]

        await use(100)  # still over: nothing new to announce
        code, _, err = await mediai(
            settings,
            "billing",
            "limit",
            "--tenant",
            tenant,
            "--meter",
            "llm_prompt_tokens",
            "--monthly",
            "2000",
        )
        assert code == 0, err
        cleared = {await next_notice(notices), await next_notice(notices)}
        # 1150 of 2000 is under 80%: both thresholds are lifted, one revision after each notice.
        assert cleared == {("UsageLimitCleared", 80, 2), ("UsageLimitCleared", 100, 2)}
        standing = (await http.get("/v1/usage/limits")).json()
        assert standing["dispatchBlocked"] is False and standing["limits"][0]["quantity"] == 1150

        code, _, err = await mediai(
            settings,
            "billing",
            "limit",
            "--tenant",
            tenant,
            "--meter",
            "llm_prompt_tokens",
            "--remove",
        )
        assert code == 0, err
        assert (await http.get("/v1/usage/limits")).json()["limits"] == []


async def test_an_unknown_meter_or_a_bad_cap_is_refused_in_one_line(
    stack: StackState, settings: Settings
) -> None:
    code, _, err = await mediai(
        settings, "billing", "limit", "--tenant", "t1", "--meter", "gold_bars", "--monthly", "5"
    )
    assert code == 2 and "unknown meter 'gold_bars'" in err and "Traceback" not in err
    code, _, err = await mediai(
        settings, "billing", "limit", "--tenant", "t1", "--meter", "video", "--monthly", "0"
    )
    assert code == 2 and "1 or more" in err
