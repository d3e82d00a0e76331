"""The dispatch's patient through the medical roles, on the stack's real NATS, Postgres and
scheduling service with the scripted stand-in: two consultations in one room each find their own
anamnesis (by dispatch and by appointment), never the other's; a minor's consent is asked of the
guardian and the event says the guardian gave it."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from services.agent import consent
from shared.bus import Bus
from shared.config import Settings
from shared.events.clinical import AnamnesisRecorded, ConsentGiven, ConsentRefused
from shared.tenants import authenticate
from tests.roles_support import consultation, said, session_on
from tests.standin import OpenAIStandin
from tests.support import eventually, until, watch
from tests.test_roles_intake import CONSENT_PHASE, script_intake, system_of

ALL_DAY = [
    {"day": d, "start": "00:00", "end": "23:30"}
    for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
]


@pytest.fixture
async def tenant_id(pool: asyncpg.Pool, tenant_key: str) -> str:
    tenant = await authenticate(pool, tenant_key)
    assert tenant is not None
    return tenant.id


@pytest.fixture
def standin(openai_standin: OpenAIStandin) -> OpenAIStandin:
    openai_standin.reset()
    return openai_standin


def ref() -> str:
    return f"pac-{uuid.uuid4().hex[:10]}"


async def appointments_for(api: httpx.AsyncClient, *patients: str) -> list[str]:
    """One booked appointment per patient, with one doctor."""
    doctor = await api.post(
        "/v1/doctors",
        json={
            "name": f"Dra. Lia Prado {uuid.uuid4().hex[:6]}",
            "specialty": "Pediatria",
            "city": "Campinas",
            "schedule": {"slotMinutes": 30, "weekly": ALL_DAY},
        },
    )
    assert doctor.status_code == 201, doctor.text
    doctor_id = doctor.json()["id"]
    slots = (await api.get(f"/v1/doctors/{doctor_id}/slots", params={"limit": 10})).json()
    made = []
    for patient, slot in zip(patients, slots["slots"], strict=False):
        booked = await api.post(
            "/v1/appointments",
            json={"doctorId": doctor_id, "startsAt": slot["startsAt"], "patientRef": patient},
        )
        assert booked.status_code == 201, booked.text
        made.append(booked.json()["id"])
    return made


async def anamnesis(api: httpx.AsyncClient, path: str) -> dict[str, Any]:
    """The record scheduling serves at ``path``, once it has stored it (another process)."""

    async def fetch() -> dict[str, Any] | None:
        answer = await api.get(path)
        return answer.json() if answer.status_code == 200 else None

    found: dict[str, Any] = await eventually(fetch)
    return found


async def test_two_consultations_in_one_room_each_find_their_own_anamnesis(
    bus: Bus, settings: Settings, tenant_id: str, standin: OpenAIStandin, api: httpx.AsyncClient
) -> None:
    room = f"consulta-{uuid.uuid4().hex[:8]}"  # reused: one patient after the other
    patients = [ref(), ref()]
    appointments = await appointments_for(api, *patients)
    dispatches = []
    async with watch(bus, AnamnesisRecorded, tenant=tenant_id) as events:
        for patient, appointment in zip(patients, appointments, strict=True):
            standin.reset()
            script_intake(standin)
            async with (
                consultation(
                    bus,
                    settings,
                    role="intake",
                    tenant=tenant_id,
                    room=room,
                    patient=f"sala-{patient}",
                    patient_ref=patient,
                    appointment_id=appointment,
                ) as harness,
                session_on(standin, harness) as session,
            ):
                for text in ("Sim, concordo.", "Dor de cabeça.", "Isso mesmo.", "Sete."):
                    await session.run(user_input=text)
                await session.run(user_input="Não tenho nenhuma alergia.")
                recorded = (await events.next()).data
            dispatches.append(harness.consultation.dispatch_id)
            assert isinstance(recorded, AnamnesisRecorded)
            assert (recorded.room, recorded.patient_ref, recorded.appointment_id) == (
                room,
                patient,
                appointment,
            )

    for dispatch_id, patient, appointment in zip(dispatches, patients, appointments, strict=True):
        by_dispatch = await anamnesis(api, f"/v1/consultations/{dispatch_id}/anamnesis")
        assert (by_dispatch["dispatchId"], by_dispatch["patientRef"]) == (dispatch_id, patient)
        assert by_dispatch["room"] == room
        assert by_dispatch["appointmentId"] == appointment
        subject = by_dispatch["questionnaireResponse"]["subject"]["identifier"]["value"]
        assert subject == patient
        by_appointment = await anamnesis(api, f"/v1/appointments/{appointment}/anamnesis")
        assert by_appointment == by_dispatch
    # The room alone finds nothing: it is not a consultation.
    missing = await api.get(f"/v1/consultations/{room}/anamnesis")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "anamnesis_not_found"


@pytest.mark.parametrize("agrees", [True, False])
async def test_a_minors_consent_is_asked_of_the_guardian_and_the_event_says_so(
    bus: Bus, settings: Settings, tenant_id: str, standin: OpenAIStandin, agrees: bool
) -> None:
    answer = {"ai_assistance": agrees, "guardian_relation": "mother"}
    standin.chat("sou a mãe", system=CONSENT_PHASE, tool_calls=[("record_consent", answer)])
    standin.chat(after_tool="record_consent", text="Obrigada! Qual é o motivo da consulta?")
    patient = ref()
    async with (
        watch(bus, ConsentGiven, ConsentRefused, tenant=tenant_id) as events,
        consultation(
            bus,
            settings,
            role="intake",
            tenant=tenant_id,
            patient="responsavel-1",
            patient_ref=patient,
            patient_is_minor=True,
        ) as harness,
        session_on(standin, harness) as session,
    ):
        # The first words are the guardian's wording: who the agent is, and the question put
        # to the adult responsible for the patient.
        opening = consent.opening("intake", recording=False, guardian=True)
        assert said(session) == [("assistant", opening)]
        assert "O(a) responsável pelo(a) paciente autoriza" in opening
        assert "inteligência artificial" in opening
        result = await session.run(user_input="Sim, sou a mãe dela e autorizo.")
        result.expect.next_event().is_function_call(name="record_consent", arguments=answer)
        event = (await events.next()).data
        if not agrees:
            await until(lambda: harness.ended)
            assert said(session)[-1] == ("assistant", consent.GUARDIAN_REFUSED)
    # The model was told that only the guardian may answer.
    assert "Só o(a) responsável pode autorizar" in system_of(standin.requests("chat")[0])
    common = (event.patient_ref, event.participant_identity, event.wording, event.guardian_relation)
    assert common == (patient, "responsavel-1", consent.GUARDIAN_WORDING, "mother")
    if agrees:
        assert isinstance(event, ConsentGiven) and event.given_by == "guardian"
    else:
        assert isinstance(event, ConsentRefused) and event.refused_by == "guardian"
        assert harness.ended == [("completed", "consent_refused")]
