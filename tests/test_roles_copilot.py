"""The doctor's copilot in a real LiveKit room: hints reach the doctor and never the patient, at
most one per interval and never the same twice, with their events (content only on the PHI
stream); and, through the real worker, a copilot that hears doctor and patient apart."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from livekit import rtc

from services.agent.copilot import TOPIC, Copilot, HintSender
from shared.bus import Bus
from shared.config import Settings
from shared.events.agents import AgentSessionStarted, AgentTranscribed, AgentUsageReported
from shared.events.base import PHI_STREAM
from shared.events.clinical import CopilotHintSent, CopilotHintWritten
from shared.tenants import authenticate
from tests.roles_support import consultation, tag
from tests.standin import OpenAIStandin
from tests.support import until, watch

pytestmark = pytest.mark.livekit


@pytest.fixture
async def tenant_id(pool: asyncpg.Pool, tenant_key: str) -> str:
    tenant = await authenticate(pool, tenant_key)
    assert tenant is not None
    return tenant.id


class Reader:
    """A person in the room (the rtc SDK) who keeps every text stream sent to them."""

    def __init__(self, identity: str) -> None:
        self.identity = identity
        self.room = rtc.Room()
        self.texts: list[tuple[str, str, dict[str, str]]] = []  # (sender, text, attributes)
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def join(cls, api: httpx.AsyncClient, room: str, identity: str) -> Reader:
        grant = await api.post("/v1/tokens", json={"room": room, "identity": identity})
        assert grant.is_success, grant.text
        reader = cls(identity)
        reader.room.register_text_stream_handler(TOPIC, reader._on_text)
        await reader.room.connect(grant.json()["wsUrl"], grant.json()["token"])
        return reader

    def _on_text(self, stream: rtc.TextStreamReader, sender: str) -> None:
        async def read() -> None:
            self.texts.append((sender, await stream.read_all(), dict(stream.info.attributes)))

        task = asyncio.create_task(read())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def leave(self) -> None:
        await self.room.disconnect()


async def test_hints_reach_the_doctor_only_one_per_interval_never_twice(
    api: httpx.AsyncClient, bus: Bus, settings: Settings, tenant_id: str
) -> None:
    room = f"consulta-{tag()}"
    doctor = await Reader.join(api, room, f"doctor-{tag()}")
    patient = await Reader.join(api, room, f"patient-{tag()}")
    # The sender as the copilot agent runs it, here as a third participant of the room.
    agent = await Reader.join(api, room, f"agent-copilot-{tag()}")
    await until(lambda: {doctor.identity, patient.identity} <= set(agent.room.remote_participants))
    fast = msgspec.structs.replace(settings, copilot_hint_interval=1)
    async with (
        watch(bus, CopilotHintSent, CopilotHintWritten, tenant=tenant_id) as events,
        consultation(bus, fast, role="copilot", tenant=tenant_id, room=room) as harness,
    ):
        copilot = harness.consultation.part(Copilot)
        copilot.sender = HintSender(
            agent.room,
            recipients=lambda: [
                p.identity
                for p in agent.room.remote_participants.values()
                if p.identity.startswith("doctor")
            ],
        )
        assert copilot.offer("Pergunta: Há quanto tempo a dor começou?").action == "send"
        assert copilot.offer("pergunta: há quanto tempo a dor começou").reason == "repeated"
        assert copilot.offer("Lembrete: medir a pressão.").reason == "too_soon"
        assert copilot.offer("—") is None  # the model had nothing to say
        # A red flag that comes too soon waits for its turn instead of being dropped.
        assert copilot.offer("Alerta: dor no peito com falta de ar.").action == "hold"
        await until(lambda: len(doctor.texts) == 2, timeout=10)
        received = [await events.next() for _ in range(4)]
        await copilot.close()
    sent = [e for e in received if isinstance(e.data, CopilotHintSent)]
    written = [e for e in received if isinstance(e.data, CopilotHintWritten)]

    assert [(who, text) for who, text, _ in doctor.texts] == [
        (agent.identity, "Há quanto tempo a dor começou?"),
        (agent.identity, "dor no peito com falta de ar."),
    ]
    assert [a["mediai.hint.kind"] for _, _, a in doctor.texts] == ["question", "red_flag"]
    assert patient.texts == []  # the patient's client never receives a hint
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
        == {a["mediai.hint.id"] for _, _, a in doctor.texts}
    )
    for person in (doctor, patient, agent):
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
    patient = await Participant.join(api, room, f"patient-{tag()}", topics=(TOPIC,))
    doctor = await Participant.join(api, room, f"doctor-{tag()}", topics=(TOPIC,))
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
