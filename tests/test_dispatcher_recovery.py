"""The dispatcher's read model against the real stack when things come out of order or an agent
vanishes: nothing recorded as done unseen, nothing left ``joined`` forever."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from shared.bus import Bus
from shared.config import Settings
from shared.events import new_event_id
from shared.events.agents import AgentDispatched, AgentDispatchRequested, AgentSessionStarted
from tests.support import eventually

OPENAI = {"stt": "openai/whisper-1", "llm": "openai/gpt-4o-mini", "tts": "openai/tts-1"}


async def shown(api: httpx.AsyncClient, dispatch_id: str, state: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        body: dict[str, Any] = (await api.get(f"/v1/agents/{dispatch_id}")).json()
        return body if body.get("state") == state else None

    return await eventually(check, timeout=40)


async def test_events_before_their_request_are_kept_and_a_vanished_agent_fails_the_dispatch(
    api: httpx.AsyncClient, bus: Bus, pool: Any, settings: Settings
) -> None:
    """A request replayed from the dead letters arrives after the dispatch's later events: they
    wait for it and fold in order. The agent of that dispatch is in no room (its worker died
    where no pool saw it): after the grace period the dispatch fails ``worker_lost``."""
    tenant = await pool.fetchval("SELECT id FROM tenants ORDER BY created_at LIMIT 1")
    dispatch_id, room = new_event_id(), f"consult-{new_event_id()[-8:]}"
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    later = [
        AgentDispatched(
            dispatch_id=dispatch_id,
            room=room,
            role="generic",
            livekit_dispatch_id="AD_gone",
            agent_name=settings.agent_name,
            dispatched_at=long_ago,
        ),
        AgentSessionStarted(
            dispatch_id=dispatch_id,
            room=room,
            role="generic",
            worker_id="worker-gone",
            agent_identity="agent-generic-gone",
            started_at=long_ago,
        ),
    ]
    for data in later:
        await bus.publish(data, tenant=tenant, key=dispatch_id)
    # The request comes last, past its deadline, so nothing launches it again.
    request = AgentDispatchRequested(
        dispatch_id=dispatch_id,
        room=room,
        role="generic",
        language="pt-BR",
        requested_at=long_ago,
        deadline_at=long_ago + timedelta(seconds=10),
        **OPENAI,
    )
    await bus.publish(request, tenant=tenant, key=dispatch_id)

    joined = await shown(api, dispatch_id, "joined")
    assert joined["agentIdentity"] == "agent-generic-gone"
    assert joined["dispatchedAt"] is not None

    failed = await shown(api, dispatch_id, "failed")
    assert failed["reason"] == "worker_lost"
    assert "left the room" in failed["detail"]
    parked = await pool.fetchval(
        "SELECT count(*) FROM dispatch_parked_events WHERE dispatch_id = $1", dispatch_id
    )
    assert parked == 0
