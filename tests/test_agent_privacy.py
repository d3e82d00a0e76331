"""A dispatch's instructions and a session's words, end to end on the real stack: the model gets
them in clear, while LiveKit's job metadata and the event streams hold only ciphertext, and the
agent job holds its dispatch's keys only while the dispatch is live."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest
from livekit import api as lk

from deploy.stack import StackState
from shared import keys_api, subjects
from shared.bus import Bus
from shared.events import EVENTS_STREAM, PHI_STREAM
from shared.events.agents import (
    AgentCommandIssued,
    AgentDispatchRequested,
    AgentSessionEnded,
    AgentSessionStarted,
    AgentTranscribed,
)
from shared.naming import livekit_room
from shared.tenants import authenticate
from tests.standin import OpenAIStandin
from tests.support import eventually, until
from tests.test_agent_e2e import (
    HEARD,
    OPENAI,
    Participant,
    dispatch,
    following,
    new_room,
    speech,
    spoken,
    standin,  # noqa: F401 - the fixture: workers registered, stand-in reset
    state_of,
)

pytestmark = pytest.mark.livekit


async def _dispatch_keys(bus: Bus, tenant: str, dispatch_id: str) -> list[str] | str:
    """What the key service answers an agent job of ``tenant`` asking for the dispatch's keys:
    their purposes, or the refusal's code."""
    pair = keys_api.ReplyKeyPair()
    try:
        reply = await keys_api.call(
            bus.nc,
            keys_api.DispatchKeysRequest(
                tenant=tenant, reply_key=pair.public, dispatch_id=dispatch_id
            ),
        )
    except keys_api.KeyRequestError as error:
        return error.code
    return sorted(key.purpose for key in pair.unwrap(reply, tenant))


async def _logged(bus: Bus, stream: str, kind: type, tenant: str, dispatch_id: str) -> bytes:
    """The last event of ``kind`` about the dispatch, as the stream holds it."""
    message = await bus.js.get_last_msg(
        subjects.stream_name(stream), subjects.key_filter(kind, tenant=tenant, key=dispatch_id)
    )
    assert message.data is not None
    return message.data


async def test_instructions_reach_the_model_in_clear_and_are_sealed_everywhere_else(
    api: httpx.AsyncClient,
    bus: Bus,
    pool: asyncpg.Pool,
    stack: StackState,
    tenant_key: str,
    standin: OpenAIStandin,  # noqa: F811 - the fixture imported above
) -> None:
    tenant = await authenticate(pool, tenant_key)
    assert tenant is not None
    canary = f"Paciente de 8 anos, asmático, código {uuid.uuid4().hex[:8]}"
    patient_ref = f"pac-{uuid.uuid4().hex[:8]}"
    answer = "Entendi. Desde quando?"
    standin.transcript_default(HEARD)
    standin.chat_default(answer)
    room = new_room()
    patient = await Participant.join(api, room, "patient-1")
    dispatch_id = ""
    try:
        async with following(bus, AgentSessionStarted, AgentSessionEnded) as events:
            dispatch_id = (
                await dispatch(
                    api,
                    room=room,
                    role="generic",
                    instructions=canary,
                    patientRef=patient_ref,
                    **OPENAI,
                )
            )["id"]
            started = await events.next(AgentSessionStarted, dispatch_id)
            await until(lambda: started.agent_identity in patient.room.remote_participants, 10)

            # LiveKit's job metadata (the dispatch event itself) and the log: ciphertext only.
            async with lk.LiveKitAPI(
                stack.livekit_url, stack.livekit_api_key, stack.livekit_api_secret
            ) as livekit:
                listed = await livekit.agent_dispatch.list_dispatch(livekit_room(tenant.id, room))
            [metadata] = [d.metadata for d in listed if dispatch_id in d.metadata]
            assert canary not in metadata and '"instructions":"enc:v1:' in metadata
            patient_key = await pool.fetchval(
                "SELECT key_id FROM data_keys WHERE tenant_id = $1 AND patient_ref = $2"
                " AND purpose = 'personal' AND destroyed_at IS NULL",
                tenant.id,
                patient_ref,
            )
            assert f'"instructions":"enc:v1:{patient_key}:' in metadata  # the patient's key
            requested = await _logged(
                bus, EVENTS_STREAM, AgentDispatchRequested, tenant.id, dispatch_id
            )
            assert canary.encode() not in requested and b'"instructions":"enc:v1:' in requested

            # The job got its dispatch's key by dispatch id and opened them for the model.
            pcm, rate = speech()
            spoke = await patient.say(pcm, rate)
            await patient.wait_for_voice(spoke, started.agent_identity)
            system = standin.requests("chat")[0]["body"]["messages"][0]["content"]
            assert canary in system

            # What was said is sealed on the PHI stream too, with the dispatch's key.
            transcript = await _logged(bus, PHI_STREAM, AgentTranscribed, tenant.id, dispatch_id)
            assert b'"text":"enc:v1:' in transcript and HEARD.encode() not in transcript
            announcement = f"O médico chega em instantes, {uuid.uuid4().hex[:6]}."
            sent = await api.post(
                f"/v1/agents/{dispatch_id}/commands", json={"command": "say", "text": announcement}
            )
            assert sent.status_code == 202, sent.text
            await until(lambda: announcement in spoken(standin), 10)  # opened by the job
            command = await _logged(bus, PHI_STREAM, AgentCommandIssued, tenant.id, dispatch_id)
            assert announcement.encode() not in command

            # The keys go to an agent job of this tenant, for this dispatch, while it is live.
            # Its patient's keys, personal and clinical: nobody else's, not the tenant's.
            assert await _dispatch_keys(bus, tenant.id, dispatch_id) == ["clinical", "personal"]
            assert await _dispatch_keys(bus, "tzzzzzzzzzz", dispatch_id) == "dispatch_not_live"
            assert (await api.delete(f"/v1/agents/{dispatch_id}")).status_code == 202
            await events.next(AgentSessionEnded, dispatch_id)
            await state_of(api, dispatch_id, "ended")

        async def refused() -> bool:
            return await _dispatch_keys(bus, tenant.id, dispatch_id) == "dispatch_not_live"

        assert await eventually(refused, timeout=10)
    finally:
        if dispatch_id:
            await api.delete(f"/v1/agents/{dispatch_id}")
        await patient.leave()
