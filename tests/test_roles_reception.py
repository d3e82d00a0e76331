"""The receptionist's tools against the stack's real scheduling service (NATS request/reply,
Postgres): a booking made through the tool, after the patient confirmed, is an appointment; two
patients confirming the same slot at once get one booking and one clean ToolError; find,
reschedule and cancel follow the same confirm-then-commit rule."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import httpx
import pytest

from shared.bus import Bus
from shared.config import Settings
from shared.events.clinical import AppointmentBooked
from shared.tenants import authenticate
from tests.roles_support import Harness, consultation, session_on, tag
from tests.standin import OpenAIStandin
from tests.support import watch

ALL_DAY = [
    {"day": d, "start": "00:00", "end": "23:30"}
    for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
]
CONSENT = "Agora: consentimento"


@pytest.fixture
async def tenant_id(pool: asyncpg.Pool, tenant_key: str) -> str:
    tenant = await authenticate(pool, tenant_key)
    assert tenant is not None
    return tenant.id


@pytest.fixture
def standin(openai_standin: OpenAIStandin) -> OpenAIStandin:
    openai_standin.reset()
    openai_standin.chat(
        "concordo", system=CONSENT, tool_calls=[("record_consent", {"ai_assistance": True})]
    )
    return openai_standin


async def new_doctor(api: httpx.AsyncClient) -> dict[str, Any]:
    response = await api.post(
        "/v1/doctors",
        json={
            "name": f"Dra. Ana Souza {tag()}",
            "specialty": "Cardiologia",
            "city": "São Paulo",
            "insurances": ["Unimed"],
            "schedule": {"slotMinutes": 30, "weekly": ALL_DAY},
        },
    )
    assert response.status_code == 201, response.text
    doctor: dict[str, Any] = response.json()
    return doctor


async def free_slots(api: httpx.AsyncClient, doctor_id: str, n: int) -> list[str]:
    slots = (await api.get(f"/v1/doctors/{doctor_id}/slots", params={"limit": n})).json()
    return [slot["startsAt"] for slot in slots["slots"]]


def tool_outputs(result: Any, name: str) -> list[Any]:
    calls = {e.item.call_id: e.item.name for e in result.events if e.type == "function_call"}
    return [
        e.item
        for e in result.events
        if e.type == "function_call_output" and calls.get(e.item.call_id) == name
    ]


async def test_booking_through_the_tool_creates_the_appointment_after_confirmation(
    bus: Bus, settings: Settings, tenant_id: str, standin: OpenAIStandin, api: httpx.AsyncClient
) -> None:
    doctor = await new_doctor(api)
    first, _ = await free_slots(api, doctor["id"], 2)
    book = {
        "doctor_id": doctor["id"],
        "starts_at": first,
        "patient_name": "Maria da Silva",
        "reason": "check-up",
    }
    standin.chat(
        "cardiologista",
        tool_calls=[("search_doctors", {"specialty": "Cardiologia", "insurance": "Unimed"})],
    )
    standin.chat("primeiro horário", tool_calls=[("book_appointment", book)])
    standin.chat("sim, confirmo", tool_calls=[("book_appointment", book)])
    patient = f"patient-{tag()}"
    async with (
        watch(bus, AppointmentBooked, tenant=tenant_id) as events,
        consultation(
            bus, settings, role="receptionist", tenant=tenant_id, api=api, patient=patient
        ) as harness,
        session_on(standin, harness) as session,
    ):
        await session.run(user_input="Sim, concordo.")
        found = await session.run(user_input="Queria um cardiologista que atenda Unimed.")
        listing = tool_outputs(found, "search_doctors")[0].output
        assert f"doctor_id={doctor['id']}" in listing and "próximo horário" in listing

        proposed = await session.run(user_input="Pode ser o primeiro horário, por favor.")
        proposal = tool_outputs(proposed, "book_appointment")[0]
        assert not proposal.is_error and proposal.output.startswith("Ainda não agendado")
        mine = await api.get("/v1/appointments", params={"patientRef": patient})
        assert mine.json()["appointments"] == []  # nothing committed before the patient confirmed

        confirmed = await session.run(user_input="Sim, confirmo.")
        booked = tool_outputs(confirmed, "book_appointment")[0]
        assert not booked.is_error and booked.output.startswith("Agendado: Dra. Ana Souza")
        event = await events.wait_for(lambda e: e.data.patient_ref == patient)
    assert isinstance(event.data, AppointmentBooked) and event.data.channel == "agent"
    appointments = (await api.get("/v1/appointments", params={"patientRef": patient})).json()[
        "appointments"
    ]
    assert [(a["doctorId"], a["status"], a["room"], a["patientName"]) for a in appointments] == [
        (doctor["id"], "booked", harness.consultation.room, "Maria da Silva")
    ]
    assert appointments[0]["startsAt"] == first


async def test_the_desk_books_for_the_dispatchs_patient_whoever_is_on_the_call(
    bus: Bus, settings: Settings, tenant_id: str, standin: OpenAIStandin, api: httpx.AsyncClient
) -> None:
    doctor = await new_doctor(api)
    slot, _ = await free_slots(api, doctor["id"], 2)
    book = {"doctor_id": doctor["id"], "starts_at": slot}
    standin.chat("para o meu filho", tool_calls=[("book_appointment", book)])
    standin.chat("confirmo", tool_calls=[("book_appointment", book)])
    standin.chat("consultas dele", tool_calls=[("find_appointments", {})])
    patient = f"pac-{tag()}"
    async with (
        watch(bus, AppointmentBooked, tenant=tenant_id) as events,
        consultation(
            bus,
            settings,
            role="receptionist",
            tenant=tenant_id,
            api=api,
            patient="mae-do-paciente",  # the guardian is on the call
            patient_ref=patient,
            patient_is_minor=True,
        ) as harness,
        session_on(standin, harness) as session,
    ):
        await session.run(user_input="Sim, concordo.")
        await session.run(user_input="Quero marcar para o meu filho.")
        booked = tool_outputs(await session.run(user_input="Confirmo."), "book_appointment")[0]
        assert not booked.is_error and booked.output.startswith("Agendado:")
        event = await events.wait_for(lambda e: e.data.doctor_id == doctor["id"])
        listed = tool_outputs(
            await session.run(user_input="Quais são as consultas dele?"), "find_appointments"
        )[0]
    assert isinstance(event.data, AppointmentBooked) and event.data.patient_ref == patient
    appointments = (await api.get("/v1/appointments", params={"patientRef": patient})).json()[
        "appointments"
    ]
    assert [(a["patientRef"], a["room"], a["startsAt"]) for a in appointments] == [
        (patient, harness.consultation.room, slot)
    ]
    assert f"appointment_id={appointments[0]['id']}" in listed.output
    guardian = (await api.get("/v1/appointments", params={"patientRef": "mae-do-paciente"})).json()
    assert guardian["appointments"] == []


async def proposed(harness: Harness, session: Any, text: str) -> None:
    await session.run(user_input="Sim, concordo.")
    result = await session.run(user_input=text)
    assert tool_outputs(result, "book_appointment")[0].output.startswith("Ainda não agendado")


async def test_two_patients_confirming_the_same_slot_get_one_booking_and_a_clean_tool_error(
    bus: Bus, settings: Settings, tenant_id: str, standin: OpenAIStandin, api: httpx.AsyncClient
) -> None:
    doctor = await new_doctor(api)
    slot, *later = await free_slots(api, doctor["id"], 4)
    book = {"doctor_id": doctor["id"], "starts_at": slot}
    standin.chat("quero esse horário", tool_calls=[("book_appointment", book)])
    standin.chat("confirmo", tool_calls=[("book_appointment", book)])
    patients = [f"patient-{tag()}", f"patient-{tag()}"]
    async with (
        consultation(
            bus, settings, role="receptionist", tenant=tenant_id, api=api, patient=patients[0]
        ) as one,
        consultation(
            bus, settings, role="receptionist", tenant=tenant_id, api=api, patient=patients[1]
        ) as two,
        session_on(standin, one) as first,
        session_on(standin, two) as second,
    ):
        await asyncio.gather(
            proposed(one, first, "Quero esse horário."),
            proposed(two, second, "Quero esse horário."),
        )
        results = await asyncio.gather(
            first.run(user_input="Confirmo."), second.run(user_input="Confirmo.")
        )
    outputs = [tool_outputs(r, "book_appointment")[0] for r in results]
    assert sorted(o.is_error for o in outputs) == [False, True]
    refused = next(o for o in outputs if o.is_error)
    assert "acabou de ser ocupado por outra pessoa" in refused.output
    # The model can offer what is still free right away.
    assert f"starts_at={later[0]}" in refused.output and f"starts_at={slot}" not in refused.output
    booked = [
        (await api.get("/v1/appointments", params={"patientRef": p})).json()["appointments"]
        for p in patients
    ]
    assert sorted(len(b) for b in booked) == [0, 1]
    winner = next(b for b in booked if b)[0]
    assert (winner["startsAt"], winner["status"]) == (slot, "booked")


async def test_find_reschedule_and_cancel_confirm_before_they_commit(
    bus: Bus, settings: Settings, tenant_id: str, standin: OpenAIStandin, api: httpx.AsyncClient
) -> None:
    doctor = await new_doctor(api)
    first, second = await free_slots(api, doctor["id"], 2)
    patient = f"patient-{tag()}"
    made = await api.post(
        "/v1/appointments",
        json={"doctorId": doctor["id"], "startsAt": first, "patientRef": patient},
    )
    assert made.status_code == 201, made.text
    appointment = made.json()["id"]
    move = {"appointment_id": appointment, "starts_at": second}
    standin.chat("minhas consultas", tool_calls=[("find_appointments", {})])
    standin.chat("remarcar", tool_calls=[("reschedule_appointment", move)])
    standin.chat("pode mudar", tool_calls=[("reschedule_appointment", move)])
    standin.chat("cancelar", tool_calls=[("cancel_appointment", {"appointment_id": appointment})])
    standin.chat(
        "pode cancelar", tool_calls=[("cancel_appointment", {"appointment_id": appointment})]
    )
    standin.chat(
        "a do vizinho", tool_calls=[("cancel_appointment", {"appointment_id": "not-mine"})]
    )
    async with (
        consultation(
            bus, settings, role="receptionist", tenant=tenant_id, api=api, patient=patient
        ) as harness,
        session_on(standin, harness) as session,
    ):
        await session.run(user_input="Concordo.")
        listed = tool_outputs(
            await session.run(user_input="Quais são minhas consultas?"), "find_appointments"
        )[0].output
        assert f"appointment_id={appointment}" in listed
        asked = tool_outputs(
            await session.run(user_input="Quero remarcar."), "reschedule_appointment"
        )[0].output
        assert asked.startswith("Ainda não remarcado")
        done = tool_outputs(
            await session.run(user_input="Sim, pode mudar."), "reschedule_appointment"
        )[0].output
        assert done.startswith("Remarcado de")
        assert (await api.get(f"/v1/appointments/{appointment}")).json()["startsAt"] == second
        asked = tool_outputs(
            await session.run(user_input="Na verdade quero cancelar."), "cancel_appointment"
        )[0].output
        assert asked.startswith("Ainda não cancelado")
        assert (await api.get(f"/v1/appointments/{appointment}")).json()["status"] == "booked"
        tool_outputs(await session.run(user_input="Sim, pode cancelar."), "cancel_appointment")
        assert (await api.get(f"/v1/appointments/{appointment}")).json()["status"] == "cancelled"
        # Someone else's appointment is not found: the agent acts for this patient only.
        await session.run(user_input="E a do vizinho?")
        stranger = tool_outputs(
            await session.run(user_input="Cancela a do vizinho sim."), "cancel_appointment"
        )[0]
    assert stranger.is_error and stranger.output.startswith("Não encontrei essa consulta")
