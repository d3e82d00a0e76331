"""What every service answers while NATS, PostgreSQL or LiveKit is away (killed, or for
PostgreSQL a fast shutdown), and what its /readyz says: the table of docs/reliability.md,
asserted. One request of each kind an API serves (a read, a create), every service's /readyz,
then the time until every service is ready again once the part is back."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from google.protobuf.json_format import MessageToJson

from services.webhooks.signing import sign
from tests.faults.support import (
    OUTAGE_SECONDS,
    FaultStack,
    Figures,
    dead_letters,
    fault_stack,
    new_clinic,
    now_seconds,
    participant_hook,
    unique,
)
from tests.support import eventually

pytestmark = pytest.mark.livekit

SERVICES = ["token", "rooms", "webhooks", "dispatcher", "billing", "scheduling"]
# The key service (no public API; the stack always runs it): its /readyz is in the table too.
READINESS = [*SERVICES, "keys"]
OPENAI = {
    "stt": "openai/gpt-4o-mini-transcribe",
    "llm": "openai/gpt-4o-mini",
    "tts": "openai/gpt-4o-mini-tts",
}
WEEK = [{"day": d, "start": "08:00", "end": "18:00"} for d in ("mon", "tue", "wed", "thu", "fri")]
# Long enough for the failures to be seen (a connection noticed gone, a task's next round)
# before the requests are made.
SETTLE_SECONDS = 3.0
# Longest answer accepted: a publish is tried three times with a 2 s timeout before the 503.
BUDGET_SECONDS = 10.0


@dataclass(frozen=True)
class Request:
    service: str
    method: str
    path: str
    body: Callable[[FaultStack], dict[str, Any]] | None = None
    idempotent: bool = False

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"


DISPATCH = Request(
    "dispatcher",
    "POST",
    "/v1/agents",
    lambda _: {"room": unique("r").replace("_", "-"), **OPENAI},
    True,
)
REQUESTS = [
    Request("token", "POST", "/v1/tokens", lambda _: {"room": "consulta-x", "identity": "pac-1"}),
    Request("rooms", "GET", "/v1/rooms"),
    Request("rooms", "POST", "/v1/rooms", lambda _: {"name": unique("r").replace("_", "-")}, True),
    Request("webhooks", "POST", "/v1/webhooks/livekit"),
    Request("dispatcher", "GET", "/v1/agents"),
    DISPATCH,
    Request("billing", "GET", "/v1/usage"),
    Request("billing", "POST", "/v1/audits", lambda _: {"from": "2001-07-01", "to": "2001-07-01"}),
    Request("scheduling", "GET", "/v1/doctors"),
    Request(
        "scheduling",
        "POST",
        "/v1/doctors",
        lambda _: {
            "name": f"Dra. Sonda {uuid.uuid4().hex[:6]}",
            "specialty": "Clínica geral",
            "city": "Recife",
            "schedule": {"timezone": "America/Recife", "slotMinutes": 30, "weekly": WEEK},
        },
        True,
    ),
]


@dataclass(frozen=True)
class Answer:
    status: int  # 0: no answer within the budget
    code: str
    retry_after: str
    seconds: float
    created: str = ""  # the id of what a 2xx created, if it names one

    def cell(self) -> str:
        shown = str(self.status or "no answer")
        if self.code:
            shown += f" {self.code}"
        if self.retry_after:
            shown += f" (Retry-After {self.retry_after})"
        return shown


@pytest.fixture(scope="module")
async def faulty() -> AsyncIterator[FaultStack]:
    # Every service, LiveKit, no agent workers; the reconciler every second, as in production.
    async with fault_stack(
        SERVICES,
        agent_pool_min=0,
        agent_pool_max=0,
        rooms_reconcile_interval=1,
        agent_dispatch_deadline=60,  # a dispatch accepted while LiveKit is away outlives it
    ) as running:
        yield running


@dataclass(frozen=True)
class Clinic:
    tenant: str
    api_key: str


async def ask(
    http: httpx.AsyncClient, faulty: FaultStack, clinic: Clinic, request: Request
) -> Answer:
    headers: dict[str, str] = {}
    content: bytes | None = None
    body = request.body(faulty) if request.body else None
    if request.service == "webhooks":
        at = now_seconds()
        hook = participant_hook(
            "participant_joined", clinic.tenant, unique("room"), unique("PA"), at=at, joined_at=at
        )
        content = MessageToJson(hook).encode()
        s = faulty.settings
        headers = {
            "Authorization": sign(content, s.livekit_api_key, s.livekit_api_secret),
            "Content-Type": "application/webhook+json",
        }
    else:
        headers = {"Authorization": f"Bearer {clinic.api_key}"}
        if request.idempotent:
            headers["Idempotency-Key"] = str(uuid.uuid4())
    began = time.monotonic()
    try:
        answer = await http.request(
            request.method, request.path, json=body, content=content, headers=headers
        )
    except httpx.TimeoutException:
        return Answer(0, "", "", time.monotonic() - began)
    seconds = time.monotonic() - began
    code, created = "", ""
    if answer.status_code >= 400:
        error = answer.json().get("error", {})
        code = str(error.get("code", "?"))
        away = [d.get("dependency") for d in error.get("details") or [] if "dependency" in d]
        code += f" ({away[0]})" if away else ""
    elif isinstance(answer.json(), dict):
        created = str(answer.json().get("id", ""))
    retry_after = answer.headers.get("retry-after", "")
    return Answer(answer.status_code, code, retry_after, seconds, created)


async def settled_everywhere(faulty: FaultStack) -> bool:
    """Nothing lost on the way: the outbox relayed every row, every durable consumer applied
    everything on its stream, and nothing was dead-lettered."""
    conn = await asyncpg.connect(faulty.settings.database_url)
    try:
        unrelayed = await conn.fetch(
            "SELECT source, count(*) FROM outbox WHERE published_at IS NULL GROUP BY source"
        )
        if unrelayed:  # each source's rows are its own relay's (shared/outbox.py)
            print(f"not settled: outbox rows not relayed {[tuple(r) for r in unrelayed]}")
            return False
    finally:
        await conn.close()
    nc, js = await faulty.js()
    try:
        for stream in await js.streams_info():
            for consumer in await js.consumers_info(stream.config.name):
                if consumer.config.durable_name and (
                    consumer.num_pending or consumer.num_ack_pending
                ):
                    print(
                        f"not settled: {stream.config.name}/{consumer.config.durable_name}"
                        f" pending {consumer.num_pending}, unacknowledged {consumer.num_ack_pending}"
                    )
                    return False
        return await dead_letters(js) == 0
    finally:
        await nc.close()


async def readiness(http: httpx.AsyncClient, faulty: FaultStack) -> dict[str, dict[str, Any]]:
    s = faulty.settings

    async def one(service: str) -> dict[str, Any]:
        answer = await http.get(f"http://{s.host}:{s.service_port(service)}/readyz")
        body: dict[str, Any] = answer.json()
        body["status"] = answer.status_code
        return body

    views = await asyncio.gather(*(one(service) for service in READINESS))
    return dict(zip(READINESS, views, strict=True))


def readyz_cell(view: dict[str, Any]) -> str:
    if view["status"] == 200:
        return "200"
    broken = [name for name, check in view["checks"].items() if check != "ok"]
    waiting = view.get("waiting_for", [])
    tasks = sorted(
        f"{name}: {task['state']}" + (f" {task['detail']}" if task.get("detail") else "")
        for name, task in view["tasks"].items()
        if task["state"] != "running"
    )
    return f"503 checks={broken} waiting_for={waiting} tasks={tasks}"


# What each request answers while the dependency is away: its status and error code ("" for a
# success). Every 503 also carries Retry-After and the error body (asserted below).
BUS = (503, "bus_unavailable")
NATS, PG = (503, "dependency_unavailable (nats)"), (503, "dependency_unavailable (postgres)")
KEYS = (503, "dependency_unavailable (keys)")  # a doctor's name is sealed with a data key
OK, CREATED, ACCEPTED = (200, ""), (201, ""), (202, "")
EXPECTED: dict[str, list[tuple[int, str]]] = {
    # token, rooms GET/POST, webhooks, dispatcher GET/POST, billing GET/audit, scheduling GET/POST
    "nats": [BUS, OK, CREATED, BUS, OK, BUS, OK, NATS, OK, KEYS],
    "postgres": [PG, PG, PG, OK, PG, PG, PG, PG, PG, PG],
    "livekit": [
        CREATED,
        OK,
        (503, "livekit_unavailable"),
        OK,
        OK,
        ACCEPTED,
        OK,
        CREATED,
        OK,
        CREATED,
    ],
}
# Which services' /readyz says 503 meanwhile (the others: 200), and the dependency it names,
# in its failed checks or in what a background task waits for.
NOT_READY: dict[str, set[str]] = {
    "nats": set(READINESS),
    # The webhooks edge needs NATS only (it keeps taking LiveKit's webhooks).
    "postgres": set(READINESS) - {"webhooks"},
    # The reconciler waits for LiveKit; so does the launcher, holding the dispatch made above.
    "livekit": {"rooms", "dispatcher"},
}
FAULTS = {"nats": "kill", "postgres": "stop", "livekit": "kill"}


def names(view: dict[str, Any], dependency: str) -> bool:
    return view["checks"].get(dependency, "ok") != "ok" or dependency in view.get("waiting_for", [])


@pytest.mark.parametrize("dependency", list(FAULTS))
async def test_what_each_service_answers_while_a_dependency_is_away(
    faulty: FaultStack, dependency: str
) -> None:
    supervisor = faulty.supervisor
    async with httpx.AsyncClient(base_url=faulty.state.gateway_url, timeout=BUDGET_SECONDS) as http:

        async def all_ready() -> bool:
            return all(v["status"] == 200 for v in (await readiness(http, faulty)).values())

        await eventually(all_ready, timeout=60, step=0.5)
        # A clinic of its own: no data key of it is in any service's cache yet.
        clinic = Clinic(*await new_clinic(faulty, f"Clínica sem {dependency}"))
        if FAULTS[dependency] == "kill":
            await supervisor.kill(dependency)
        else:
            await supervisor.stop_part(dependency)  # PostgreSQL's fast shutdown
        down = time.monotonic()
        await asyncio.sleep(SETTLE_SECONDS)  # the failure seen everywhere, by design
        answers = await asyncio.gather(*(ask(http, faulty, clinic, r) for r in REQUESTS))

        async def readiness_says() -> dict[str, dict[str, Any]] | None:
            views = await readiness(http, faulty)
            unready = {s for s, v in views.items() if v["status"] == 503 and names(v, dependency)}
            return views if unready == NOT_READY[dependency] else None

        try:  # a background task notices at its next round
            ready = await eventually(readiness_says, timeout=10, step=0.5)
        except AssertionError:
            ready = await readiness(http, faulty)
        await asyncio.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down)))  # the outage
        back = time.monotonic()
        await supervisor.start_again(dependency)
        await eventually(all_ready, timeout=60, step=0.2)
        recovery = time.monotonic() - back
        after = [await ask(http, faulty, clinic, r) for r in REQUESTS]
        await eventually(lambda: settled_everywhere(faulty), timeout=60, step=0.5)
        accepted = answers[REQUESTS.index(DISPATCH)]
        if accepted.created:  # a dispatch accepted meanwhile is not stuck: LiveKit has it now
            shown = await http.get(
                f"/v1/agents/{accepted.created}",
                headers={"Authorization": f"Bearer {clinic.api_key}"},
            )
            assert shown.json()["state"] == "dispatched", shown.text
    print()
    for request, answer in zip(REQUESTS, answers, strict=True):
        print(f"| {request.service} | {request.name} | {answer.cell()} | {answer.seconds:.1f}s |")
    for service, view in ready.items():
        print(f"| {service} | /readyz | {readyz_cell(view)} |")
    Figures(
        f"{dependency}-away-answers",
        sent=len(answers),
        acknowledged=sum(1 for a in answers if 200 <= a.status < 300),
        recovery_seconds=recovery,
        extra={
            "answers": sorted({a.status for a in answers}),
            "slowest": f"{max(a.seconds for a in answers):.1f}s",
        },
    ).report()
    assert [(a.status, a.code) for a in answers] == EXPECTED[dependency]
    assert all(a.retry_after for a in answers if a.status == 503)
    assert all(a.seconds < BUDGET_SECONDS for a in answers)
    unready = {s for s, v in ready.items() if v["status"] == 503 and names(v, dependency)}
    assert unready == NOT_READY[dependency], {s: readyz_cell(v) for s, v in ready.items()}
    assert all(200 <= a.status < 300 for a in after), after  # all of it works again
