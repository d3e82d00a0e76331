"""Fixtures: one real stack (NATS, Postgres, LiveKit, services, gateway) per test session,
started by the same code as ``mediai up``, on free ports under a temporary folder."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from deploy.stack import Stack, StackState
from services import http_services
from services.agent.tracing import install_tracing
from shared.bus import Bus, connect_bus
from shared.config import Settings
from shared.db import create_pool
from shared.tenants import create_tenant
from tests.otlp import SpanReceiver
from tests.standin import OpenAIStandin
from tests.support import stack_settings


@pytest.fixture(scope="session")
def openai_standin() -> Iterator[OpenAIStandin]:
    """The OpenAI-compatible stand-in the stack's agent workers use (their OPENAI_BASE_URL);
    tests script it, and reset it first (tests/standin)."""
    with OpenAIStandin() as server:
        yield server


@pytest.fixture(scope="session")
def data_dir() -> Iterator[Path]:
    # Not under pytest's tmp_path: pytest resets its root folder to mode 0700 at every session
    # start, which would lock Postgres (running as its own system user) out of its data.
    made = Path(tempfile.mkdtemp(prefix="mediai-test-"))
    yield made
    shutil.rmtree(made, ignore_errors=True)


@pytest.fixture(scope="session")
def span_receiver(data_dir: Path) -> Iterator[SpanReceiver]:
    """Where every process of the stack exports its spans (OTLP/HTTP), kept in a file."""
    with SpanReceiver(data_dir / "spans.jsonl") as receiver:
        yield receiver


@pytest.fixture(scope="session")
def settings(
    openai_standin: OpenAIStandin, data_dir: Path, span_receiver: SpanReceiver
) -> Settings:
    return stack_settings(
        data_dir,
        openai_base_url=openai_standin.base_url,
        openai_api_key="standin-key",
        otel_endpoint=span_receiver.url,
    )


@pytest.fixture(scope="session", autouse=True)
def telemetry(settings: Settings) -> None:
    """The test process traces like a service does, so trace propagation can be checked; the
    role tests run agent sessions in it, so it leaves their personal data out of its spans as
    the agent's processes do (the PHI canary test searches its spans too)."""
    install_tracing(settings, service="tests")


@pytest.fixture(scope="session")
async def running_stack(settings: Settings) -> AsyncIterator[Stack]:
    """The session's stack, for the tests that stop or restart one of its parts (by pid)."""
    # Spans leave each process within half a second (the default is five): tests look for them.
    quick = {"OTEL_BSP_SCHEDULE_DELAY": "500"}
    running = Stack(
        settings,
        services=list(settings.services) or None,
        environment={service: quick for service in http_services()},
    )
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture(scope="session")
async def stack(running_stack: Stack) -> StackState:
    assert running_stack.state is not None
    return running_stack.state


@pytest.fixture(scope="session")
async def bus(stack: StackState, settings: Settings) -> AsyncIterator[Bus]:
    connected = await connect_bus(settings, "tests", streams="create")
    yield connected
    await connected.close()


@pytest.fixture(scope="session")
async def pool(stack: StackState, settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    created = await create_pool(settings)
    yield created
    await created.close()


@pytest.fixture(scope="session")
async def tenant_key(stack: StackState) -> str:
    """The development tenant's key, made by the stack as for ``mediai up``."""
    return stack.dev_api_key


@pytest.fixture(scope="session")
async def other_tenant_key(pool: asyncpg.Pool) -> str:
    async with pool.acquire() as conn:
        _, key = await create_tenant(conn, "Another clinic")
    return key


@pytest.fixture
async def fresh_tenant(pool: asyncpg.Pool) -> str:
    """A new tenant's id: a clinic with nothing of its own yet."""
    async with pool.acquire() as conn:
        tenant, _ = await create_tenant(conn, "A new clinic")
    return tenant.id


@pytest.fixture
async def api(stack: StackState, tenant_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client to the gateway, authenticated as the development tenant."""
    async with httpx.AsyncClient(
        base_url=stack.gateway_url,
        headers={"Authorization": f"Bearer {tenant_key}"},
        timeout=10,
    ) as client:
        yield client


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
