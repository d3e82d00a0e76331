"""Helpers for billing's tests against the real stack: tenants, publishing, waiting, the CLI."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import nats.js.errors

from deploy.stack import StackState, child_environ
from services.billing.consumers import USAGE_PROJECTION
from shared import subjects
from shared.bus import Bus
from shared.config import Settings
from shared.events import CODEC, Envelope
from shared.tenants import create_tenant
from tests.support import eventually

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


async def new_tenant(pool: asyncpg.Pool, name: str = "Billing test clinic") -> tuple[str, str]:
    """A fresh tenant (its id, its API key), so totals never mix between tests."""
    async with pool.acquire() as conn:
        tenant, key = await create_tenant(conn, name)
    return tenant.id, key


@asynccontextmanager
async def client(stack: StackState, key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as http:
        yield http


async def publish(bus: Bus, events: Sequence[Envelope], *, chunk: int = 200) -> list[int]:
    """Publish whole envelopes (ids included) as producers would; returns stream sequences.

    ``Nats-Msg-Id`` is the event id except for ids seen earlier in ``events``: those get a
    fresh Msg-Id, so the duplicate really lands in the stream (as one published again after
    JetStream's dedup window would) and only the consumer's inbox can catch it.
    """
    sequences: list[int] = []
    seen: dict[str, int] = {}
    for start in range(0, len(events), chunk):
        batch = []
        for event in events[start : start + chunk]:
            seen[event.id] = seen.get(event.id, 0) + 1
            msg_id = event.id if seen[event.id] == 1 else f"{event.id}/copy{seen[event.id]}"
            batch.append(
                bus.js.publish(
                    subjects.event_subject(event.data, tenant=event.tenant, key=event.subject),
                    CODEC.encode(event),
                    headers={"Nats-Msg-Id": msg_id},
                )
            )
        sequences += [ack.seq for ack in await asyncio.gather(*batch)]
    return sequences


async def caught_up(bus: Bus, timeout: float = 60.0) -> None:
    """Wait until the live projection has applied and acknowledged everything published."""

    async def idle() -> bool:
        try:
            info = await bus.js.consumer_info(USAGE_PROJECTION.stream, USAGE_PROJECTION.durable)
        except nats.js.errors.NotFoundError:
            return False  # the billing service has not created its consumer yet
        return info.num_pending == 0 and info.num_ack_pending == 0

    await eventually(idle, timeout)


async def usage_totals(http: httpx.AsyncClient, start: str, end: str) -> dict[str, int]:
    response = await http.get("/v1/usage", params={"from": start, "to": end, "group_by": "meter"})
    assert response.status_code == 200, response.text
    return {row["meter"]: row["quantity"] for row in response.json()["rows"]}


async def mediai(settings: Settings, *args: str, timeout: float = 120.0) -> tuple[int, str, str]:
    """Run ``mediai ARGS`` against the test stack as an operator would."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "deploy",
        *args,
        env={**os.environ, **child_environ(settings)},
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def line(invoice: dict[str, Any], meter: str) -> dict[str, Any]:
    return next(item for item in invoice["lines"] if item["meter"] == meter)
