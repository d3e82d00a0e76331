"""One trace per dispatch, end to end, and nothing the patient said in it.

A private stack (NATS, Postgres, LiveKit, token, dispatcher, billing, webhooks, keys, gateway)
exports every process's spans over OTLP/HTTP to a receiver this test runs (tests/otlp_receiver),
which writes them to files. A real patient speaks into a real room; the stand-in's scripted
transcript, the agent's answer, the dispatch's instructions and the patient's identity carry a
canary. Requests other than dispatches are sampled at ratio 0 here (webhooks at 1, to follow
their link), so the trace is there because dispatches are always sampled.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from deploy.stack import Stack, StackState
from shared.bus import Bus, connect_bus
from shared.config import Settings
from shared.events.agents import (
    AgentSessionEnded,
    AgentSessionStarted,
    AgentStateChanged,
    AgentUsageReported,
)
from tests.otlp_receiver import OtlpReceiver, Span
from tests.standin import OpenAIStandin
from tests.support import eventually, stack_settings
from tests.test_agent_e2e import OPENAI, Participant, following, new_room, speech

pytestmark = pytest.mark.livekit

CANARY = f"CANARIO{uuid.uuid4().hex[:10].upper()}"
PATIENT = f"paciente-{CANARY.lower()}"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    folder = Path(tempfile.mkdtemp(prefix="mediai-spans-"))
    otlp = OtlpReceiver(folder)
    yield otlp
    otlp.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
async def traced(
    receiver: OtlpReceiver, openai_standin: OpenAIStandin
) -> AsyncIterator[tuple[Settings, StackState]]:
    data_dir = Path(tempfile.mkdtemp(prefix="mediai-traced-"))
    settings = stack_settings(
        data_dir,
        openai_base_url=openai_standin.base_url,
        openai_api_key="standin-key",
        otel_endpoint=receiver.endpoint,
        trace_sample_ratio=0.0,
        # A busy machine may take longer than production's 10 s to start a job.
        agent_dispatch_deadline=30,
        services=("token", "dispatcher", "billing", "webhooks"),
    )
    stack = Stack(
        settings,
        services=list(settings.services),
        environment={"webhooks": {"MEDIAI_TRACE_SAMPLE_RATIO": "1"}},
    )
    state = await stack.start()
    try:
        yield settings, state
    finally:
        await stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
async def traced_bus(traced: tuple[Settings, StackState]) -> AsyncIterator[Bus]:
    bus = await connect_bus(traced[0], "tests")
    yield bus
    await bus.close()


def named(spans: list[Span], name: str, service: str | None = None) -> list[Span]:
    return [s for s in spans if s.name == name and service in (None, s.service)]


def ancestors(span: Span, by_id: dict[str, Span]) -> list[str]:
    """The names of the span's parents, nearest first (as far as they were exported)."""
    names = []
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        names.append(span.name)
    return names


async def test_a_dispatch_is_one_trace_from_the_request_to_billing_without_what_was_said(
    traced: tuple[Settings, StackState],
    traced_bus: Bus,
    receiver: OtlpReceiver,
    openai_standin: OpenAIStandin,
) -> None:
    _, state = traced
    standin = openai_standin
    standin.reset()
    standin.transcript_default(f"Estou com dor de cabeça, {CANARY}.")
    standin.chat("dor de cabeça", text=f"Entendi, {CANARY}. A dor é forte?")
    room = new_room()
    async with httpx.AsyncClient(
        base_url=state.gateway_url,
        headers={"Authorization": f"Bearer {state.dev_api_key}"},
        timeout=10,
    ) as api:
        patient = await Participant.join(api, room, PATIENT)
        pcm, rate = speech()
        async with following(
            traced_bus, AgentSessionStarted, AgentStateChanged, AgentSessionEnded
        ) as events:
            dispatched = await api.post(
                "/v1/agents",
                json={
                    "room": room,
                    "role": "generic",
                    "participant": PATIENT,
                    "instructions": f"Você atende a Clínica {CANARY}.",
                    **OPENAI,
                },
            )
            assert dispatched.status_code == 202, dispatched.text
            dispatch_id = dispatched.json()["id"]
            started = await events.next(AgentSessionStarted, dispatch_id, timeout=45)
            await events.next(AgentStateChanged, dispatch_id)  # ready: listening
            spoke = await patient.say(pcm, rate)
            await patient.wait_for_voice(spoke, started.agent_identity)
            assert (await api.delete(f"/v1/agents/{dispatch_id}")).status_code == 202
            await events.next(AgentSessionEnded, dispatch_id, timeout=30)
        await patient.leave()
    assert standin.requests("transcription") and standin.requests("speech")

    async def complete() -> list[Span] | None:
        """Every process's spans, once the job's (exported as it ends) and billing's are in."""
        spans = receiver.spans()
        usage = f"process {AgentUsageReported.TYPE}"
        done = named(spans, usage, "mediai-billing") and named(spans, "agent job", "mediai-agent")
        return spans if done else None

    spans = await eventually(complete, timeout=45, step=0.5)
    by_id = {s.span_id: s for s in spans}

    # The request, always sampled although the ratio is 0.
    (request,) = named(spans, "POST /v1/agents", "mediai-dispatcher")
    trace_id = request.trace_id
    in_trace = [s for s in spans if s.trace_id == trace_id]
    names = {(s.service, s.name) for s in in_trace}
    print(
        f"dispatch trace: {len(in_trace)} spans from "
        f"{', '.join(sorted({s.service for s in in_trace}))}"
    )

    # The dispatcher: the event published, its launcher's consumer, LiveKit's CreateDispatch.
    (create,) = named(in_trace, "LiveKit CreateDispatch", "mediai-dispatcher")
    assert ancestors(create, by_id)[:3] == [
        "process mediai.agent.dispatch_requested.v1",
        "publish mediai.agent.dispatch_requested.v1",
        "POST /v1/agents",
    ]
    assert create.attributes["mediai.dispatch.id"] == dispatch_id

    # The agent job, a child of the request (its traceparent rode in the job metadata).
    (job,) = named(in_trace, "agent job", "mediai-agent")
    assert job.parent_id == request.span_id
    assert job.attributes["mediai.dispatch.id"] == dispatch_id
    assert job.attributes["mediai.agent.outcome"] == "end_requested"
    # livekit-agents' own spans inside it: the join, the session, a turn's STT, LLM and TTS.
    for name in ("room_connect", "agent_session", "user_turn", "llm_request", "tts_request"):
        found = named(in_trace, name, "mediai-agent")
        assert found, f"no {name} span in the dispatch's trace: {sorted(names)}"
        assert "agent job" in ancestors(found[0], by_id), (name, ancestors(found[0], by_id))
    (turn, *_) = named(in_trace, "user_turn", "mediai-agent")
    assert turn.attributes["gen_ai.request.model"] == OPENAI["stt"].split("/")[1]  # its STT

    # The job's events, published under the job, and billing's projection of its usage.
    published = named(in_trace, f"publish {AgentSessionStarted.TYPE}", "mediai-agent")
    assert published and "agent job" in ancestors(published[0], by_id)
    (projected, *_) = named(in_trace, f"process {AgentUsageReported.TYPE}", "mediai-billing")
    assert ancestors(projected, by_id)[:2] == [f"publish {AgentUsageReported.TYPE}", "agent job"]

    # Ratio 0 for everything else: the patient's token request left no trace.
    assert not named(spans, "POST /v1/tokens")

    # Webhooks: each of the room's carries its session id, and links to the room's trace.
    room_sid = job.attributes["mediai.room.sid"]
    hooks = [
        s
        for s in named(spans, "POST /v1/webhooks/livekit")
        if s.attributes.get("mediai.room.sid") == room_sid
    ]
    starts = [h for h in hooks if h.attributes.get("mediai.room.trace_id") == h.trace_id]
    assert len(starts) == 1, hooks
    room_trace = starts[0].trace_id
    later = [h for h in hooks if h is not starts[0]]
    assert later, "no webhook after room_started"
    for hook in later:
        assert hook.attributes["mediai.room.trace_id"] == room_trace
        assert [link[0] for link in hook.links] == [room_trace]

    # Nothing the patient said, nor the instructions, the answer or the identity, anywhere.
    exported = receiver.raw()
    assert exported
    assert CANARY.encode() not in exported
    assert CANARY.lower().encode() not in exported
    # ...while the spans that would carry them were exported (the check looked at them).
    assert {"mediai-agent", "mediai-dispatcher", "mediai-billing", "mediai-webhooks"} <= {
        s.service for s in spans
    }
