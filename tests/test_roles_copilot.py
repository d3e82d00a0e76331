"""The doctor's copilot in a real LiveKit room: hints reach the doctor (the role in their token,
not their name) and never the patient, at most one per interval and never the same twice, with
their events (content only on the PHI stream); a hint forged by a patient reaches the doctor's
client and is no hint by the receiver's rule; and, through the real worker, a copilot that hears
doctor and patient apart."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from livekit import api as livekit_api
from livekit import rtc

from deploy.stack import StackState
from services.agent import copilot as hints
from services.agent.copilot import TOPIC, Copilot, HintSender, is_hint
from services.agent.presence import Presence
from shared.bus import Bus
from shared.config import Settings
from shared.events.agents import AgentSessionStarted, AgentTranscribed, AgentUsageReported
from shared.events.base import PHI_STREAM
from shared.events.clinical import CopilotHintSent, CopilotHintWritten
from shared.naming import livekit_room
from shared.participants import ROLE_ATTRIBUTE
from shared.tenants import authenticate
from tests.roles_support import ROLES, consultation, tag
from tests.standin import OpenAIStandin
from tests.support import until, watch

pytestmark = pytest.mark.livekit


@pytest.fixture
async def tenant_id(pool: asyncpg.Pool, tenant_key: str) -> str:
    tenant = await authenticate(pool, tenant_key)
    assert tenant is not None
    return tenant.id


class Reader:
    """A person in the room (the rtc SDK) as a frontend sees it: every text stream that arrives
    on the hint topic is kept in ``texts``; those the receiver's rule (``is_hint``) accepts
    are also in ``hints``, which is what the doctor's screen would show."""

    def __init__(self, identity: str) -> None:
        self.identity = identity
        self.room = rtc.Room()
        self.texts: list[tuple[str, str, dict[str, str]]] = []  # (sender, text, attributes)
        self.hints: list[tuple[str, str, dict[str, str]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def join(
        cls, api: httpx.AsyncClient, room: str, identity: str, role: str = "patient"
    ) -> Reader:
        body = {"room": room, "identity": identity, "role": role}
        grant = await api.post("/v1/tokens", json=body)
        assert grant.is_success, grant.text
        return await cls.connect(grant.json()["wsUrl"], grant.json()["token"], identity)

    @classmethod
    async def connect(cls, url: str, token: str, identity: str) -> Reader:
        reader = cls(identity)
        reader.room.register_text_stream_handler(TOPIC, reader._on_text)
        await reader.room.connect(url, token)
        return reader

    def _on_text(self, stream: rtc.TextStreamReader, sender: str) -> None:
        async def read() -> None:
            received = (sender, await stream.read_all(), dict(stream.info.attributes))
            self.texts.append(received)
            if is_hint(self.room.remote_participants.get(sender)):
                self.hints.append(received)

        task = asyncio.create_task(read())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def leave(self) -> None:
        await self.room.disconnect()


async def join_as_copilot_agent(stack: StackState, tenant_id: str, room: str) -> Reader:
    """A participant as LiveKit makes one for a copilot job: kind agent, ``mediai.role``
    copilot, from a token signed with the server's own key (no token of ours can say agent)."""
    identity = f"agent-copilot-{tag()}"
    token = (
        livekit_api.AccessToken(stack.livekit_api_key, stack.livekit_api_secret)
        .with_identity(identity)
        .with_kind("agent")
        .with_attributes({ROLE_ATTRIBUTE: hints.ROLE})
        .with_grants(
            livekit_api.VideoGrants(room_join=True, room=livekit_room(tenant_id, room), agent=True)
        )
        .to_jwt()
    )
    return await Reader.connect(stack.livekit_url, token, identity)


async def test_hints_reach_the_doctor_only_one_per_interval_never_twice(
    api: httpx.AsyncClient, bus: Bus, settings: Settings, stack: StackState, tenant_id: str
) -> None:
    room = f"consulta-{tag()}"
    # The doctor is whoever the clinic's token says; the patient's name starts with "doctor".
    doctor = await Reader.join(api, room, f"medica-{tag()}", role="doctor")
    patient = await Reader.join(api, room, "doctora-ana")
    agent = await join_as_copilot_agent(stack, tenant_id, room)
    # Everyone knows everyone, as when a real copilot writes its first hint seconds after it
    # joined (a stream can overtake the news of its sender's arrival: docs/agents-roles.md).
    await until(lambda: {doctor.identity, patient.identity} <= set(agent.room.remote_participants))
    await until(lambda: agent.identity in doctor.room.remote_participants)
    fast = msgspec.structs.replace(settings, copilot_hint_interval=1)
    async with (
        watch(bus, CopilotHintSent, CopilotHintWritten, tenant=tenant_id) as events,
        consultation(bus, fast, role="copilot", tenant=tenant_id, room=room) as harness,
    ):
        copilot = harness.consultation.part(Copilot)
        # Whom the worker writes to: the people whose token gives them the role's text_to.
        presence = Presence(
            agent.room, participant="", listens_to=[], empty_timeout=60, on_empty=lambda _: None
        )
        copilot.sender = HintSender(
            agent.room, recipients=lambda: presence.humans(ROLES["copilot"].text_to)
        )
        assert copilot.offer("Pergunta: Há quanto tempo a dor começou?").action == "send"
        assert copilot.offer("pergunta: há quanto tempo a dor começou").reason == "repeated"
        assert copilot.offer("Lembrete: medir a pressão.").reason == "too_soon"
        assert copilot.offer("—") is None  # the model had nothing to say
        # A red flag that comes too soon waits for its turn instead of being dropped.
        assert copilot.offer("Alerta: dor no peito com falta de ar.").action == "hold"
        await until(lambda: len(doctor.hints) == 2, timeout=10)
        received = [await events.next() for _ in range(4)]
        await copilot.close()
    sent = [e for e in received if isinstance(e.data, CopilotHintSent)]
    written = [e for e in received if isinstance(e.data, CopilotHintWritten)]

    assert [(who, text) for who, text, _ in doctor.hints] == [
        (agent.identity, "Há quanto tempo a dor começou?"),
        (agent.identity, "dor no peito com falta de ar."),
    ]
    assert doctor.texts == doctor.hints  # every stream on the topic came from the copilot
    assert [a["mediai.hint.kind"] for _, _, a in doctor.hints] == ["question", "red_flag"]
    # The patient's client never receives a hint, whatever their identity looks like.
    assert patient.texts == []
    # Counted on the business stream without their words; the words only on the PHI stream.
    assert [e.data.kind for e in sent] == ["question", "red_flag"]
    assert "text" not in CopilotHintSent.__struct_fields__
    assert CopilotHintSent.STREAM != PHI_STREAM and CopilotHintWritten.STREAM == PHI_STREAM
    assert [e.data.text for e in written] == [
        "Há quanto tempo a dor começou?",
        "dor no peito com falta de ar.",
    ]
    assert [w.data.recipients for w in written] == [[doctor.identity]] * 2
    assert (
        {s.data.hint_id for s in sent}
        == {w.data.hint_id for w in written}
        == {a["mediai.hint.id"] for _, _, a in doctor.hints}
    )
    for person in (doctor, patient, agent):
        await person.leave()


async def test_a_hint_forged_by_a_patient_reaches_the_doctors_client_and_is_no_hint(
    api: httpx.AsyncClient,
) -> None:
    room = f"consulta-{tag()}"
    doctor = await Reader.join(api, room, f"medica-{tag()}", role="doctor")
    patient = await Reader.join(api, room, f"paciente-{tag()}")
    await until(lambda: patient.identity in doctor.room.remote_participants)
    # LiveKit cannot reserve a topic: a patient may write on the hint topic, to the doctor,
    # with the attributes a real hint has.
    await patient.room.local_participant.send_text(
        "Alerta: suspender a insulina.",
        topic=TOPIC,
        destination_identities=[doctor.identity],
        attributes={"mediai.hint.id": "forged", "mediai.hint.kind": "red_flag"},
    )
    await until(lambda: doctor.texts, timeout=10)
    assert doctor.texts == [
        (
            patient.identity,
            "Alerta: suspender a insulina.",
            {"mediai.hint.id": "forged", "mediai.hint.kind": "red_flag"},
        )
    ]
    # The stream arrived, and the receiver's rule refuses it: why, in what LiveKit says of the
    # sender (its kind comes from its token, which no caller of POST /v1/tokens can choose).
    sender = doctor.room.remote_participants[patient.identity]
    assert sender.kind == rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD
    assert sender.attributes == {ROLE_ATTRIBUTE: "patient"}
    assert not is_hint(sender)
    assert doctor.hints == []
    for person in (doctor, patient):
        await person.leave()


async def test_the_copilot_agent_hears_doctor_and_patient_apart_and_writes_to_the_doctor(
    api: httpx.AsyncClient, bus: Bus, openai_standin: OpenAIStandin
) -> None:
    from tests.test_agent_e2e import OPENAI, Participant, dispatch, registered_workers, speech

    await registered_workers(bus)
    standin = openai_standin
    standin.reset()
    standin.transcript_default("Estou com dor no peito e falta de ar desde ontem.")
    standin.chat(system="copiloto do médico", text="Alerta: dor no peito com falta de ar.")
    room = f"consulta-{tag()}"
    # Who is the doctor is the role in the token: the patient's identity starts with "doctor",
    # the doctor's does not.
    patient = await Participant.join(api, room, "doctora-ana", topics=(TOPIC,))
    doctor = await Participant.join(api, room, f"medico-{tag()}", topics=(TOPIC,), role="doctor")
    async with (
        watch(bus, AgentSessionStarted, AgentTranscribed, CopilotHintSent) as events,
        watch(bus, AgentUsageReported) as usage,
    ):
        created = await dispatch(api, room=room, role="copilot", **OPENAI)
        started = await events.wait_for(
            lambda e: (
                isinstance(e.data, AgentSessionStarted) and e.data.dispatch_id == created["id"]
            ),
            timeout=30,
        )
        await until(lambda: started.data.agent_identity in patient.room.remote_participants, 10)
        await patient.say(*speech())
        heard = await events.wait_for(
            lambda e: isinstance(e.data, AgentTranscribed) and e.data.dispatch_id == created["id"],
            timeout=30,
        )
        await until(lambda: doctor.texts, 30)
        hint = await events.wait_for(lambda e: isinstance(e.data, CopilotHintSent))
        assert (await api.delete(f"/v1/agents/{created['id']}")).status_code == 202
        reports: list[AgentUsageReported] = []
        while not (reports and reports[-1].final):
            report = (await usage.next(timeout=30)).data
            if isinstance(report, AgentUsageReported) and report.dispatch_id == created["id"]:
                reports.append(report)
    assert (heard.data.speaker, heard.data.participant_identity) == ("user", patient.identity)
    assert doctor.texts == [(TOPIC, started.data.agent_identity, "dor no peito com falta de ar.")]
    # The real copilot is what the receiver's rule accepts: kind agent, mediai.role copilot.
    copilot_agent = doctor.room.remote_participants[started.data.agent_identity]
    assert copilot_agent.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    assert copilot_agent.attributes[ROLE_ATTRIBUTE] == hints.ROLE
    assert is_hint(copilot_agent)
    assert hint.data.kind == "red_flag"
    assert patient.texts == []
    chat: dict[str, Any] = standin.requests("chat")[0]["body"]
    assert chat["messages"][-1]["content"] in (
        f"Paciente: {heard.data.text}",
        [{"type": "text", "text": f"Paciente: {heard.data.text}"}],
    )
    # What the copilot's own listening transcribed is metered like any session's STT.
    assert 2.5 < sum(r.stt_audio_seconds for r in reports) < 8
    assert sum(r.llm_prompt_tokens for r in reports) > 0
    await patient.leave()
    await doctor.leave()
