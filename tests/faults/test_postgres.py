"""PostgreSQL away while signed webhooks flow: shut down (fast) and started again, then frozen
(every process of the cluster SIGSTOPped) and thawed. Every webhook answered 2xx is applied
exactly once by the rooms read model and by billing, nothing is dead-lettered, billing's audit
by replay matches live, and meanwhile the services answer 503 with Retry-After: never 500,
never a hang past their timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from services.billing.consumers import USAGE_PROJECTION
from services.rooms.projection import READ_MODEL
from tests.faults.support import (
    ANSWER_BUDGET_SECONDS,
    OUTAGE_SECONDS,
    FaultStack,
    Figures,
    Sent,
    dead_letters,
    fault_stack,
    inbox_count,
    new_clinic,
    participant_hook,
    send_all,
    unique,
)
from tests.support import eventually

RATE = 20.0  # webhooks per second, before, during and after the outage
LEAD_SECONDS = 2.0  # traffic before the fault
TAIL_SECONDS = 3.0  # traffic after the dependency is back
CATCH_UP_SECONDS = 120.0
DB_TIMEOUT = 2.0
# A request may wait for a pooled connection, then for its statement (asyncpg's own bound is a
# second past the server's): the services' timeout on one database operation, plus a margin.
BUDGET = max(ANSWER_BUDGET_SECONDS, DB_TIMEOUT + (DB_TIMEOUT + 1) + 1)


@pytest.fixture(scope="module")
async def faulty() -> AsyncIterator[FaultStack]:
    async with fault_stack(
        ["webhooks", "rooms", "billing"],
        livekit_local=False,
        livekit_url="ws://127.0.0.1:9",
        rooms_reconcile_interval=0,  # corrections would blur "applied exactly once"
        # The services' own bounds on a database that does not answer (a frozen one cannot
        # enforce its statement_timeout): shortened, as the retry schedule is, to fit the
        # answer budget; the defaults (5 s, 15 s) behave the same, only slower.
        db_acquire_timeout=DB_TIMEOUT,
        db_statement_timeout=DB_TIMEOUT,
    ) as running:
        yield running


@dataclass
class Probes:
    """Answers of the services' HTTP APIs while the database is away."""

    answers: list[tuple[str, int, bool, float]] = field(default_factory=list)  # what, status, ...

    def record(self, what: str, status: int, retry_after: bool, seconds: float) -> None:
        self.answers.append((what, status, retry_after, seconds))

    @property
    def unavailable(self) -> int:
        return sum(1 for _, status, _, _ in self.answers if status == 503)

    def wrong(self) -> list[tuple[str, int, bool, float]]:
        """Answers that break the rule: a 500 (or any status but 200/503), a 503 without
        Retry-After, no answer (status 0) or one slower than the budget."""
        return [
            answer
            for answer in self.answers
            if answer[1] not in (200, 503)
            or (answer[1] == 503 and not answer[2])
            or answer[3] > BUDGET
        ]


async def probe(http: httpx.AsyncClient, day: str, probes: Probes, stop: asyncio.Event) -> None:
    """Ask the rooms and billing APIs (both need the database) until ``stop``."""
    requests = {
        "rooms": ("/v1/rooms", {}),
        "billing": ("/v1/usage", {"from": day, "to": day, "group_by": "meter"}),
    }

    async def one(what: str) -> None:
        path, params = requests[what]
        while not stop.is_set():
            began = time.monotonic()
            try:
                answer = await http.get(path, params=params)
                status, retry_after = answer.status_code, "retry-after" in answer.headers
            except httpx.TimeoutException:
                status, retry_after = 0, False
            probes.record(what, status, retry_after, time.monotonic() - began)
            await asyncio.sleep(0.5)

    await asyncio.gather(*(one(what) for what in requests))


async def outage_case(
    faulty: FaultStack,
    case: str,
    fault: Callable[[], Awaitable[object]],
    heal: Callable[[], Awaitable[object]],
) -> None:
    settings = faulty.settings
    assert OUTAGE_SECONDS > BUDGET + 1, "an outage this short cannot show a hang"
    # A pool, not one connection: the test's own connection dies with the database too.
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    assert pool is not None
    _, js = nc_js = await faulty.js()
    try:
        tenant_id, key = await new_clinic(faulty, f"Fault clinic {case}")
        # A day of its own, in the past, so the audit covers exactly this case's traffic.
        start = datetime(2001, 5, 10 if "down" in case else 11, 12, 0, tzinfo=UTC)
        day = start.date().isoformat()
        count = int(RATE * (LEAD_SECONDS + OUTAGE_SECONDS + TAIL_SECONDS)) // 2
        hooks, expected_ms = [], 0
        for i in range(count):
            joined = int((start + timedelta(seconds=i)).timestamp())
            stay = 30 + i % 60
            room, sid = unique("room"), unique("PA")
            hooks.append(
                participant_hook(
                    "participant_joined", tenant_id, room, sid, at=joined, joined_at=joined
                )
            )
            hooks.append(
                participant_hook(
                    "participant_left", tenant_id, room, sid, at=joined + stay, joined_at=joined
                )
            )
            expected_ms += stay * 1000
        dead_before = await dead_letters(js)
        sent, probes, stop = Sent(), Probes(), asyncio.Event()
        async with (
            faulty.client(authenticated=False) as livekit,
            httpx.AsyncClient(
                base_url=faulty.state.gateway_url,
                headers={"Authorization": f"Bearer {key}"},
                timeout=BUDGET + 5,
            ) as http,
        ):
            traffic = asyncio.create_task(
                send_all(livekit, hooks, settings, sent, concurrency=4, rate=RATE)
            )
            await asyncio.sleep(LEAD_SECONDS)  # traffic before the fault, by design
            await fault()
            prober = asyncio.create_task(probe(http, day, probes, stop))
            await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself lasts this long
            healed = time.monotonic()
            await heal()
            stop.set()
            await prober
            held = list(sent.acknowledged)  # taken while the database was away

            async def applied_everywhere(ids: list[str]) -> bool:
                counts = [
                    await inbox_count(pool, consumer, ids)
                    for consumer in (READ_MODEL.durable, USAGE_PROJECTION.durable)
                ]
                return counts == [len(ids), len(ids)]

            caught_up = True
            try:
                # Recovery: until every webhook taken during the outage is applied everywhere.
                await eventually(lambda: applied_everywhere(held), CATCH_UP_SECONDS, step=0.2)
                recovery = time.monotonic() - healed
                await asyncio.wait_for(traffic, timeout=300)
                await eventually(
                    lambda: applied_everywhere(sent.acknowledged), CATCH_UP_SECONDS, step=0.2
                )
            except AssertionError:
                caught_up, recovery = False, time.monotonic() - healed
                traffic.cancel()
            ids = [hook.id for hook in hooks]
            applied = {
                "rooms": await inbox_count(pool, READ_MODEL.durable, ids),
                "billing": await inbox_count(pool, USAGE_PROJECTION.durable, ids),
            }
            rows = await pool.fetchval(
                "SELECT count(*) FROM room_participants WHERE tenant = $1 AND left_at IS NOT NULL",
                tenant_id,
            )
            usage = await http.get(
                "/v1/usage", params={"from": day, "to": day, "group_by": "meter"}
            )
            billed = {r["meter"]: r["quantity"] for r in usage.json().get("rows", [])}
            audit = await http.post("/v1/audits", json={"from": day, "to": day})
        dead = await dead_letters(js) - dead_before
        Figures(
            case,
            sent=len(sent.sent),
            acknowledged=len(sent.acknowledged),
            stored=len(
                sent.acknowledged
            ),  # 2xx means JetStream acknowledged (tests/faults/test_nats.py)
            applied=applied,
            dead_lettered=dead,
            recovery_seconds=recovery,
            extra={
                "api_503": probes.unavailable,
                "api_wrong": len(probes.wrong()),
                "audit_matches": audit.status_code == 201 and audit.json().get("matches"),
            },
        ).report()
    finally:
        await pool.close()
        await nc_js[0].close()

    assert len(sent.acknowledged) == len(hooks)  # the webhooks edge needs NATS only
    assert dead == 0, f"{dead} messages dead-lettered during a dependency outage"
    assert caught_up, f"applied {applied} of {len(sent.acknowledged)} acknowledged webhooks"
    assert applied == {"rooms": len(hooks), "billing": len(hooks)}
    assert rows == count  # every participant joined and left once in the read model
    assert billed.get("participant_time") == expected_ms
    assert audit.status_code == 201, audit.text
    assert audit.json()["matches"] is True
    assert not probes.wrong(), f"answers while PostgreSQL was away: {probes.wrong()[:5]}"
    assert probes.unavailable > 0, "the outage was never seen by the APIs"


async def test_postgres_down_then_started_again(faulty: FaultStack) -> None:
    supervisor = faulty.supervisor
    await outage_case(
        faulty,
        "postgres-down",
        fault=lambda: supervisor.stop_part("postgres"),  # its stop signal: fast shutdown
        heal=lambda: supervisor.start_again("postgres"),
    )


async def test_postgres_frozen_then_thawed(faulty: FaultStack) -> None:
    supervisor = faulty.supervisor

    async def freeze() -> None:
        frozen = supervisor.freeze("postgres")
        assert len(frozen) > 1  # the postmaster and its backends, not the postmaster alone

    async def thaw() -> None:
        supervisor.thaw("postgres")

    await outage_case(faulty, "postgres-frozen", fault=freeze, heal=thaw)
