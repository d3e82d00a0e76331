"""The platform's dependencies (tenant, bus, pool, settings) cost no task per request.

Litestar resolves dependencies that do not depend on each other in an anyio task group, a task
each, on every request (litestar-org/litestar#4563); ``shared.http`` chains them so that they
are resolved one after the other."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import asyncpg
import httpx
from litestar import Litestar, get
from litestar.datastructures import State

from shared.bus import Bus
from shared.config import Settings
from shared.http import PLATFORM_DEPENDENCIES, BusDep, CallerTenant, PoolDep, SettingsDep
from shared.tenants import ApiKeys


@get("/none", sync_to_thread=False)
def no_dependencies() -> str:
    return "ok"


@get("/platform", sync_to_thread=False)
def platform(tenant: CallerTenant, bus: BusDep, pool: PoolDep, settings: SettingsDep) -> str:
    return tenant.id


async def tasks_for(client: httpx.AsyncClient, path: str, key: str) -> int:
    """How many tasks the event loop creates while ``path`` is answered (the app runs in this
    test's event loop)."""
    loop = asyncio.get_running_loop()
    previous = loop.get_task_factory()
    created = 0

    def counting(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any], **kwargs: Any
    ) -> asyncio.Task[Any]:
        nonlocal created
        created += 1
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(counting)  # type: ignore[arg-type]
    try:
        answer = await client.get(path, headers={"Authorization": f"Bearer {key}"})
    finally:
        loop.set_task_factory(previous)
    assert answer.status_code == 200, answer.text
    return created


async def test_a_handler_taking_the_platform_dependencies_starts_no_more_tasks(
    settings: Settings, bus: Bus, pool: asyncpg.Pool, tenant_key: str
) -> None:
    keys = ApiKeys(pool, ttl=settings.api_key_cache_ttl, size=settings.api_key_cache_size)
    app = Litestar(
        [no_dependencies, platform],
        dependencies=PLATFORM_DEPENDENCIES,
        state=State({"bus": bus, "pool": pool, "settings": settings, "api_keys": keys}),
    )
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://mediai.test") as client:
        await tasks_for(client, "/platform", tenant_key)  # the key is cached from here on
        assert await tasks_for(client, "/platform", tenant_key) == await tasks_for(
            client, "/none", tenant_key
        )
