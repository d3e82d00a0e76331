"""The PHI canary test (issue 10): unique strings go into every personal field, real intake,
copilot and receptionist sessions run on the stand-in provider, a dead letter is forced, and then
every log, every exported span, every message of every stream and every table is searched. A
canary may appear only sealed (or where docs/privacy.md says it may). After the patient's
erasure no personal canary may appear anywhere, in clear or in anything a live key still opens;
the clinical record stays, sealed under its own key; the billing audit still matches."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from livekit import rtc
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from deploy.stack import StackState
from services.agent import consent
from shared.bus import Bus
from shared.config import Settings
from shared.events import DeadLettered
from shared.events.agents import AgentSessionEnded, AgentSessionStarted
from shared.events.clinical import (
    AnamnesisRecorded,
    AppointmentBooked,
    ConsentGiven,
    CopilotHintWritten,
)
from shared.events.patients import ErasureRequested, PatientDataErased
from shared.keys import KeyCache
from shared.phi import Phi
from shared.tenants import authenticate
from tests.canary import Search, search_files, search_streams, search_tables
from tests.otlp import SpanReceiver
from tests.roles_support import consultation, session_on
from tests.standin import OpenAIStandin
from tests.support import eventually, until, watch
from tests.test_agent_e2e import OPENAI, Participant, registered_workers, speech, state_of
from tests.test_scheduling_anamnesis import record

pytestmark = pytest.mark.livekit

CONSENT_PHASE = consent.PHASE_HEADING.removeprefix("## ")
HINTS = "mediai.copilot.hints"
MARK = uuid.uuid4().hex[:6].upper()
CANARIES = {
    "name": f"CNRYNAME{MARK}",  # the participant's display name, in the token
    "room_metadata": f"CNRYROOMMETA{MARK}",
    "instructions": f"CNRYINSTRUCT{MARK}",  # the dispatch's instructions
    "speech": f"CNRYSPEECH{MARK}",  # what the patient said, through the stand-in's STT
    "contact": f"CNRYCONTACT{MARK}",  # an appointment's contact
    "booked_name": f"CNRYBOOKED{MARK}",  # the name the receptionist booked with
    "hint": f"CNRYHINT{MARK}",  # a copilot hint
    "anamnesis": f"CNRYANAMNESIS{MARK}",  # an answer of the anamnesis: the clinical record
    "dead_letter": f"CNRYDEADLETTER{MARK}",  # inside a record that is dead-lettered
}
# The clinical record is kept by law, sealed with its own key (not the erased one).
CLINICAL = {"anamnesis", "dead_letter"}
PERSONAL = set(CANARIES) - CLINICAL


async def join(api: httpx.AsyncClient, room: str, identity: str, **token: Any) -> Participant:
    """A person joins with a token asked as a clinic asks it (a name, a role, a patient)."""
    grant = await api.post("/v1/tokens", json={"room": room, "identity": identity, **token})
    assert grant.is_success, grant.text
    person = Participant(identity)
    person.room.on("track_subscribed", person._on_track)
    person.room.register_text_stream_handler(HINTS, person._text_handler(HINTS))
    await person.room.connect(grant.json()["wsUrl"], grant.json()["token"])
    track = rtc.LocalAudioTrack.create_audio_track("microphone", person.source)
    await person.room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    )
    return person


def script(standin: OpenAIStandin) -> None:
    said = f"Sim, concordo. {CANARIES['speech']}"
    standin.transcript_default(said)
    # Intake: consent, then the complaint recorded (the answer is the clinical canary).
    standin.chat(
        "concordo", system=CONSENT_PHASE, tool_calls=[("record_consent", {"ai_assistance": True})]
    )
    standin.chat(after_tool="record_consent", text="Obrigada! Qual é o motivo da consulta?")
    answer = {"link_id": "queixa-principal.descricao", "answer": CANARIES["anamnesis"]}
    standin.chat(
        "concordo",
        system="assistente de triagem",
        tool_calls=[("record_answer", answer), ("finish_intake", {})],
    )
    standin.chat(after_tool="*", system="assistente de triagem", text="Obrigada. Até já.")
    # Copilot: one hint to the doctor.
    standin.chat(system="copiloto do médico", text=f"Pergunta: {CANARIES['hint']}")


async def intake_and_copilot(
    api: httpx.AsyncClient, bus: Bus, tenant: str, patient_ref: str
) -> None:
    """A consultation room for the patient: intake takes the anamnesis by voice while the
    copilot writes to the doctor."""
    room = f"consulta-{uuid.uuid4().hex[:8]}"
    made = await api.post(
        "/v1/rooms",
        json={"name": room, "metadata": CANARIES["room_metadata"], "patientRef": patient_ref},
    )
    assert made.status_code == 201, made.text
    patient = await join(
        api, room, f"pac-{MARK.lower()}", name=CANARIES["name"], patientRef=patient_ref
    )
    doctor = await join(api, room, "doctor-canary", role="doctor", name="Dra. Canário")
    pcm, rate = speech()
    common = {"room": room, "participant": patient.identity, "patientRef": patient_ref, **OPENAI}
    async with watch(
        bus,
        AgentSessionStarted,
        AgentSessionEnded,
        ConsentGiven,
        AnamnesisRecorded,
        CopilotHintWritten,
        tenant=tenant,
    ) as events:
        intake = await api.post(
            "/v1/agents",
            json={"role": "intake", "instructions": CANARIES["instructions"], **common},
        )
        copilot = await api.post("/v1/agents", json={"role": "copilot", **common})
        assert intake.status_code == copilot.status_code == 202, (intake.text, copilot.text)
        ids = {intake.json()["id"], copilot.json()["id"]}
        seen: list[Any] = []

        async def arrived(kind: type, count: int = 1, **where: Any) -> None:
            def matching() -> int:
                return sum(
                    1
                    for d in seen
                    if isinstance(d, kind) and all(getattr(d, k) == v for k, v in where.items())
                )

            while matching() < count:
                seen.append((await events.next(timeout=60)).data)

        intake_id, copilot_id = intake.json()["id"], copilot.json()["id"]
        for dispatch_id in ids:
            await arrived(AgentSessionStarted, dispatch_id=dispatch_id)
        await patient.say(pcm, rate)  # "Sim, concordo ...", over the consent question if need be
        await arrived(ConsentGiven, dispatch_id=intake_id)
        await patient.say(pcm, rate)  # the complaint
        await arrived(AnamnesisRecorded, dispatch_id=intake_id)
        await arrived(CopilotHintWritten, dispatch_id=copilot_id)
        await until(lambda: doctor.texts, 20)
        for dispatch_id in ids:
            assert (await api.delete(f"/v1/agents/{dispatch_id}")).status_code == 202
        for dispatch_id in ids:
            await state_of(api, dispatch_id, "ended", timeout=30)
    await patient.leave()
    await doctor.leave()


async def reception(
    api: httpx.AsyncClient,
    bus: Bus,
    settings: Settings,
    standin: OpenAIStandin,
    tenant: str,
    patient_ref: str,
    doctor_id: str,
) -> None:
    """The receptionist books for the patient (a session on the stand-in, on the real bus and
    scheduling), with the patient's name."""
    first = (await api.get(f"/v1/doctors/{doctor_id}/slots", params={"limit": 1})).json()
    booking = {
        "doctor_id": doctor_id,
        "starts_at": first["slots"][0]["startsAt"],  # the next slot, taken now: still to come
        "patient_name": CANARIES["booked_name"],
    }
    standin.chat("marcar", system="recepcionista", tool_calls=[("book_appointment", booking)])
    standin.chat("confirmo", system="recepcionista", tool_calls=[("book_appointment", booking)])
    standin.chat(after_tool="*", system="recepcionista", text="Pronto.")
    async with (
        watch(bus, AppointmentBooked, tenant=tenant) as booked,
        consultation(
            bus, settings, role="receptionist", tenant=tenant, patient_ref=patient_ref, api=api
        ) as harness,
        session_on(standin, harness) as session,
    ):
        await session.run(user_input="Sim, concordo.")
        await session.run(user_input="Quero marcar para amanhã.")
        await session.run(user_input="Sim, confirmo.")
        await booked.wait_for(lambda e: e.data.patient_ref == patient_ref)


async def clinic_books(api: httpx.AsyncClient, patient_ref: str, doctor_id: str) -> None:
    """The clinic books another appointment for the patient, with their contact."""
    slots = (await api.get(f"/v1/doctors/{doctor_id}/slots", params={"limit": 2})).json()
    made = await api.post(
        "/v1/appointments",
        json={
            "doctorId": doctor_id,
            "startsAt": slots["slots"][-1]["startsAt"],
            "patientRef": patient_ref,
            "patientContact": CANARIES["contact"],
        },
    )
    assert made.status_code == 201, made.text


async def dead_letter(bus: Bus, tenant: str, patient_ref: str) -> None:
    """A record scheduling can never store (not a QuestionnaireResponse): dead-lettered."""
    broken = record(
        "consulta-quebrada",
        patient_ref=patient_ref,
        questionnaire_response={"resourceType": "QuestionnaireResponse", "item": "x"},
        summary_pt_br=f"Registro inválido {CANARIES['dead_letter']}",
    )
    async with watch(bus, DeadLettered) as letters:
        await bus.publish(broken, tenant=tenant, key=broken.dispatch_id)
        await letters.wait_for(lambda e: e.data.original_type == AnamnesisRecorded.TYPE)


async def export(api: httpx.AsyncClient, patient_ref: str) -> set[str]:
    """The canaries in the patient's export (``GET /v1/patients/{patientRef}/data``)."""
    answer = await api.get(f"/v1/patients/{patient_ref}/data", headers={"X-Purpose": "canary"})
    assert answer.status_code == 200, answer.text
    return {name for name, value in CANARIES.items() if value in answer.text}


async def search_everything(
    settings: Settings, stack: StackState, bus: Bus, tenant: str, receiver: SpanReceiver
) -> Search:
    # Fresh keys each time, straight from the key service: what the platform can open now.
    search = Search(Phi(KeyCache(bus.nc, ttl=1)), [tenant, "system"], CANARIES)
    logs = await search_files(search, settings.data_dir / "logs", "log")
    # Every part of the stack wrote its log there, the agent workers too.
    assert {Path(part.log).name for part in stack.parts} <= set(logs), logs
    assert any(name.startswith("agent-worker-") for name in logs), logs
    await search_files(search, settings.data_dir / "agent-spool", "spool")
    # The receptionist ran in this process (tests/roles_support.py): its spans are sent now.
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    assert await asyncio.to_thread(provider.force_flush)
    for service, batch in await asyncio.to_thread(receiver.exported):
        await search.text(f"spans {service}", json.dumps(batch, ensure_ascii=False))
    streams = await search_streams(search, bus.js)
    assert {"MEDIAI_EVENTS", "MEDIAI_PHI", "MEDIAI_DEADLETTER"} <= set(streams), streams
    assert await search_tables(search, settings.database_url) > 10
    return search


def exported(receiver: SpanReceiver, service: str, name: str, since: float) -> bool:
    """Whether ``service`` exported a span called ``name`` that started after ``since``."""
    return any(
        span["service"] == f"mediai-{service}"
        and span["name"] == name
        and int(span["startTimeUnixNano"]) > since * 1e9
        for span in receiver.spans()
    )


async def test_no_canary_is_anywhere_in_clear_and_none_after_the_erasure(
    api: httpx.AsyncClient,
    bus: Bus,
    pool: asyncpg.Pool,
    settings: Settings,
    stack: StackState,
    tenant_key: str,
    openai_standin: OpenAIStandin,
    span_receiver: SpanReceiver,
) -> None:
    tenant = await authenticate(pool, tenant_key)
    assert tenant is not None
    patient_ref = f"pac-canary-{MARK.lower()}"
    await registered_workers(bus)
    openai_standin.reset()
    every_day = [
        {"day": d, "start": "00:00", "end": "23:30"}
        for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    ]
    doctor = await api.post(
        "/v1/doctors",
        json={
            "name": "Dr. Canário",
            "specialty": "Clínica geral",
            "city": "Recife",
            "schedule": {"timezone": "America/Recife", "slotMinutes": 30, "weekly": every_day},
        },
    )
    doctor_id = doctor.json()["id"]
    script(openai_standin)

    await intake_and_copilot(api, bus, tenant.id, patient_ref)
    await reception(api, bus, settings, openai_standin, tenant.id, patient_ref, doctor_id)
    await clinic_books(api, patient_ref, doctor_id)
    await dead_letter(bus, tenant.id, patient_ref)
    # The patient's copy (LGPD Art. 18 II) opens it all; reading it leaves nothing in clear either.
    copy = await export(api, patient_ref)
    assert {"booked_name", "contact", "anamnesis", "speech"} <= copy, copy

    # -- before: each canary is somewhere, and only sealed -----------------------------------
    before = await search_everything(settings, stack, bus, tenant.id, span_receiver)
    print("before the erasure:\n" + before.report())
    services = {span["service"] for span in span_receiver.spans()}
    assert {"mediai-scheduling", "mediai-rooms", "mediai-agent", "mediai-keys"} <= services
    clear = {s for s in before.sightings if s.how == "clear"}
    assert not clear, f"canaries in clear:\n{before.report()}"
    for name in CANARIES:
        assert before.where(name, "decrypted"), f"{name} was not found at all:\n{before.report()}"
    assert before.where("dead_letter", "decrypted") >= {"stream MEDIAI_DEADLETTER"}

    # -- the erasure ------------------------------------------------------------------------
    erasing = time.time()
    erased = await api.post(f"/v1/patients/{patient_ref}/erasure")
    assert erased.status_code in (200, 202), erased.text

    async def completed() -> dict[str, Any] | None:
        answer = (await api.get(f"/v1/patients/{patient_ref}/erasure")).json()
        return answer if answer.get("status") == "completed" else None

    certificate = await eventually(completed, timeout=30)
    # Every span of the erasure is in the export before it is searched again: the key's
    # destruction, rooms folding the erasure, scheduling folding both holders' reports.
    erasure_spans = [
        ("keys", "keys destroy"),
        ("rooms", f"process {ErasureRequested.TYPE}"),
        ("scheduling", f"process {PatientDataErased.TYPE}"),
    ]

    async def all_exported() -> bool:
        return all(exported(span_receiver, *span, since=erasing) for span in erasure_spans)

    await eventually(all_exported, timeout=20, step=0.25)

    # -- after: nothing personal opens any more; the clinical record still does -------------
    after = await search_everything(settings, stack, bus, tenant.id, span_receiver)
    print("after the erasure:\n" + after.report())
    assert not {s for s in after.sightings if s.how == "clear"}, after.report()
    left = {s for s in after.sightings if s.canary in PERSONAL}
    assert not left, f"personal canaries still readable:\n{after.report()}"
    assert after.where("anamnesis", "decrypted"), "the clinical record must be kept"
    # The dead letter went with the personal key; the record's own copy is the clinical one.
    assert "stream MEDIAI_DEADLETTER" not in after.where("dead_letter")
    assert "anamnesis" in certificate["kept"][0]["what"]
    # The patient's copy now holds the clinical record and nothing personal.
    copy = await export(api, patient_ref)
    assert "anamnesis" in copy and not copy & PERSONAL, copy

    # Billing never needed any of it: today's audit still matches to the cent.
    today = datetime.now(ZoneInfo(settings.billing_timezone)).date().isoformat()
    audit = await api.post("/v1/audits", json={"from": today, "to": today})
    assert audit.status_code == 201, audit.text
    assert audit.json()["matches"] is True, audit.json()
