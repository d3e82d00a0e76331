"""Least privilege on the bus, against the stack's real NATS: each component's own user may do
its job (the rest of the suite runs with them) and nothing of another's."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig

from deploy.bus_users import AGENT, ensure_credentials, permissions, production_users
from deploy.stack import StackState
from shared import subjects
from shared.bus import Bus
from shared.config import Settings
from shared.events import CODEC, envelope
from shared.events.agents import AgentDispatchRequested, AgentEndRequested, AgentUsageReported
from tests.support import until

EVENTS = subjects.stream_name("events")


@asynccontextmanager
async def logged_in(settings: Settings, user: str) -> AsyncIterator[tuple[NatsClient, list[str]]]:
    """A connection as ``user`` of the stack, and the errors the server sends it."""
    errors: list[str] = []

    async def on_error(error: Exception) -> None:
        errors.append(str(error).lower())

    nc = await nats.connect(
        settings.nats_url,
        user=user,
        password=ensure_credentials(settings.data_dir)[user],
        inbox_prefix=subjects.inbox_prefix(user),
        error_cb=on_error,
        max_reconnect_attempts=0,
    )
    try:
        yield nc, errors
    finally:
        await nc.close()


async def refused(errors: list[str], what: str) -> bool:
    """Whether the server sent a permissions violation naming ``what`` (it arrives on its own,
    a moment after the refused operation)."""
    await until(lambda: any("permissions violation" in e and what.lower() in e for e in errors))
    return True


async def test_a_component_cannot_publish_another_components_events(
    stack: StackState, settings: Settings, bus: Bus
) -> None:
    """The token service's user publishing an agent's usage event (what would bill a clinic
    for minutes nobody used) is refused by the server, and nothing reaches the stream."""
    usage = AgentUsageReported(
        dispatch_id=str(uuid.uuid4()),
        room="consulta-1",
        role="intake",
        period_start=datetime(2026, 3, 2, 9, tzinfo=UTC),
        period_end=datetime(2026, 3, 2, 10, tzinfo=UTC),
        llm_prompt_tokens=10_000_000,
    )
    event = envelope(usage, source="mediai/token", tenant="tforged0001", subject="d-1")
    subject = subjects.event_subject(usage, tenant=event.tenant, key=event.subject)
    async with logged_in(settings, "token") as (nc, errors):
        with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await nc.jetstream(timeout=2).publish(subject, CODEC.encode(event))
        assert await refused(errors, f'publish to "{subject}"')
    with pytest.raises(nats.js.errors.NotFoundError):
        await bus.js.get_last_msg(EVENTS, subject)


async def test_an_agent_worker_cannot_read_the_event_streams(
    stack: StackState, settings: Settings
) -> None:
    """The agent's user reads commands and nothing else: no core subscription to a stream's
    subjects, no consumer of another filter, no stream info (its subjects name every room and
    dispatch), no other user's replies."""
    dispatch_requests = subjects.type_filter(AgentDispatchRequested)
    async with logged_in(settings, AGENT) as (nc, errors):
        await nc.subscribe("mediai.events.>")
        assert await refused(errors, 'subscription to "mediai.events.>"')
        await nc.subscribe(f"{subjects.inbox_prefix('scheduling')}.>")
        assert await refused(errors, 'subscription to "_inbox_scheduling.>"')

        js = nc.jetstream(timeout=2)
        for config in (
            ConsumerConfig(filter_subject="mediai.events.>", ack_policy=AckPolicy.NONE),
            ConsumerConfig(name="peek", filter_subject=dispatch_requests),
        ):
            with pytest.raises(nats.errors.TimeoutError):
                await js.add_consumer(EVENTS, config, deliver_subject=nc.new_inbox())
        assert await refused(errors, f"$js.api.consumer.create.{EVENTS}")
        with pytest.raises(nats.errors.TimeoutError):
            await js.stream_info(EVENTS)
        assert await refused(errors, f"$js.api.stream.info.{EVENTS}")

        # What it may do: follow one dispatch's commands (shared by the agent's own code).
        commands = subjects.key_filter(AgentEndRequested, tenant="t1", key=str(uuid.uuid4()))
        created = await js.add_consumer(
            EVENTS,
            ConsumerConfig(
                name=f"agent-{uuid.uuid4().hex}",
                filter_subject=commands,
                deliver_subject=nc.new_inbox(),
                ack_policy=AckPolicy.NONE,
                inactive_threshold=5.0,
            ),
        )
        assert created.config.filter_subject == commands


def test_each_user_is_allowed_only_its_own_events() -> None:
    """What the server enforces, read from the rendered permissions: no component but the
    operator may publish what another produces, and only the dispatcher may publish a dispatch
    (the tenant of an agent's requests is read from it)."""
    dispatch = subjects.type_filter(AgentDispatchRequested)
    usage = subjects.type_filter(AgentUsageReported)
    assert dispatch in permissions("dispatcher").publish
    assert usage in permissions(AGENT).publish
    for user in ("token", "rooms", "webhooks", "billing", "scheduling", AGENT):
        assert dispatch not in permissions(user).publish, user
    for user in ("token", "rooms", "webhooks", "billing", "scheduling", "dispatcher"):
        assert usage not in permissions(user).publish, user
    assert not any(s.startswith("$JS.API.STREAM.CREATE") for s in permissions("billing").publish)


def test_the_production_users_file_is_the_rendering_of_the_code(repo_root: Path) -> None:
    committed = repo_root / "deploy" / "production" / "nats" / "users.conf"
    assert committed.read_text() == production_users(), "run 'mediai docs nats-users'"


def test_the_operator_cli_still_works(
    stack: StackState, settings: Settings, tmp_path: Path
) -> None:
    """`mediai streams` on the stack's machine logs in as the operator from the data dir."""
    shown = subprocess.run(
        [sys.executable, "-m", "deploy", "streams"],
        env={
            "PATH": "/usr/bin:/bin",
            "MEDIAI_DATA_DIR": str(settings.data_dir),
            "NATS_URL": settings.nats_url,
            "DATABASE_URL": settings.database_url,
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert EVENTS in shown.stdout
