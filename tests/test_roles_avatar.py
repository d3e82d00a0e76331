"""Avatars: asked for without the provider's key, the job says so with an event on the real NATS
and the agent carries on with voice only (its audio output untouched, no avatar time metered)."""

from __future__ import annotations

import asyncpg
import msgspec
import pytest
from livekit.agents import AgentSession

from services.agent.avatar import Avatar
from shared.bus import Bus
from shared.config import Settings
from shared.events.clinical import AvatarUnavailable
from shared.tenants import authenticate
from tests.roles_support import agent_for, consultation
from tests.support import watch


@pytest.fixture
async def tenant_id(pool: asyncpg.Pool, tenant_key: str) -> str:
    tenant = await authenticate(pool, tenant_key)
    assert tenant is not None
    return tenant.id


@pytest.mark.parametrize(
    ("provider", "setting"), [("bey", "BEY_API_KEY"), ("tavus", "TAVUS_API_KEY")]
)
async def test_missing_avatar_keys_mean_an_event_and_voice_only(
    bus: Bus, settings: Settings, tenant_id: str, provider: str, setting: str
) -> None:
    asked = msgspec.structs.replace(
        settings, agent_avatar=provider, bey_api_key=None, tavus_api_key=None
    )
    async with (
        watch(bus, AvatarUnavailable, tenant=tenant_id) as events,
        consultation(bus, asked, role="receptionist", tenant=tenant_id) as harness,
        AgentSession() as session,
    ):
        avatar = harness.consultation.part(Avatar)
        started = await avatar.start(session, None, agent_identity="agent-x")  # type: ignore[arg-type]
        assert started is False
        assert session.output.audio is None  # nothing took over the agent's voice
        await session.start(agent_for(harness))  # the session runs, voice only
        event = await events.next()
        assert avatar.seconds() == 0.0
    unavailable = event.data
    assert isinstance(unavailable, AvatarUnavailable)
    assert (unavailable.provider, unavailable.reason) == (provider, "missing_credentials")
    assert unavailable.detail.startswith(f"{setting} is not set")
    assert event.subject == harness.consultation.dispatch_id


async def test_no_avatar_configured_or_a_text_only_role_means_no_event(
    bus: Bus, settings: Settings, tenant_id: str
) -> None:
    asked = msgspec.structs.replace(settings, agent_avatar="bey")
    async with (
        consultation(bus, settings, role="intake", tenant=tenant_id) as plain,
        consultation(bus, asked, role="copilot", tenant=tenant_id) as copilot,
        AgentSession() as session,
    ):
        assert (
            await plain.consultation.part(Avatar).start(session, None, agent_identity="a") is False
        )  # type: ignore[arg-type]
        assert (
            await copilot.consultation.part(Avatar).start(session, None, agent_identity="b")
            is False
        )  # type: ignore[arg-type]
    assert plain.emitted == copilot.emitted == []
