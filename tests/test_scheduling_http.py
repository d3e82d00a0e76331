"""Scheduling over HTTP through the gateway: doctors, search, slots, booking, tenant isolation."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest

from deploy.stack import StackState
from shared.bus import Bus
from shared.events.clinical import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentRescheduled,
    DoctorCreated,
    DoctorUpdated,
)
from shared.tenants import authenticate
from tests.support import watch

ALL_DAY = [
    {"day": d, "start": "00:00", "end": "23:30"}
    for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
]


def tag() -> str:
    return uuid.uuid4().hex[:8]


async def new_doctor(api: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {
        "name": f"Dra. Ana Souza {tag()}",
        "specialty": "Cardiologia",
        "city": "São Paulo",
        "insurances": ["Unimed Nacional", "Bradesco Saúde"],
        "schedule": {"timezone": "America/Sao_Paulo", "slotMinutes": 30, "weekly": ALL_DAY},
        **fields,
    }
    response = await api.post("/v1/doctors", json=body)
    assert response.status_code == 201, response.text
    doctor: dict[str, Any] = response.json()
    return doctor


async def free_slots(
    api: httpx.AsyncClient, doctor_id: str, limit: int = 5
) -> list[dict[str, Any]]:
    response = await api.get(f"/v1/doctors/{doctor_id}/slots", params={"limit": limit})
    assert response.status_code == 200, response.text
    slots: list[dict[str, Any]] = response.json()["slots"]
    return slots


def booking(
    doctor_id: str, starts_at: str, patient: str = "patient-1", **extra: Any
) -> dict[str, Any]:
    return {"doctorId": doctor_id, "startsAt": starts_at, "patientRef": patient, **extra}


@pytest.fixture
async def tenant_id(pool: asyncpg.Pool, tenant_key: str) -> str:
    tenant = await authenticate(pool, tenant_key)
    assert tenant is not None
    return tenant.id


@pytest.fixture
async def other_api(stack: StackState, other_tenant_key: str) -> Any:
    async with httpx.AsyncClient(
        base_url=stack.gateway_url,
        headers={"Authorization": f"Bearer {other_tenant_key}"},
        timeout=10,
    ) as client:
        yield client


async def outbox_events_about(pool: asyncpg.Pool, key: str) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE position(convert_to($1, 'UTF8') IN payload) > 0", key
    )
    return count


async def test_doctors_are_created_read_and_updated_with_events(
    api: httpx.AsyncClient, bus: Bus, tenant_id: str
) -> None:
    async with watch(bus, DoctorCreated, DoctorUpdated, tenant=tenant_id) as events:
        doctor = await new_doctor(api, crm="CRM/SP 123456")
        created = await events.wait_for(lambda e: e.subject == doctor["id"])
        assert isinstance(created.data, DoctorCreated)
        assert created.data.specialty == "Cardiologia"

        assert doctor["schedule"]["slotMinutes"] == 30
        assert doctor["active"] is True
        assert doctor["nextSlot"] is not None  # open almost all day, every day
        assert doctor["nextSlot"]["startsAt"].endswith("-03:00")  # in the doctor's zone
        fetched = (await api.get(f"/v1/doctors/{doctor['id']}")).json()
        assert fetched["name"] == doctor["name"]
        assert fetched["crm"] == "CRM/SP 123456"

        response = await api.patch(
            f"/v1/doctors/{doctor['id']}",
            json={
                "city": "Campinas",
                "schedule": {"slotMinutes": 20, "weekly": ALL_DAY[:1]},
            },
        )
        assert response.status_code == 200, response.text
        updated = response.json()
        assert updated["city"] == "Campinas"
        assert updated["name"] == doctor["name"]
        assert updated["schedule"] == {
            "timezone": "America/Sao_Paulo",
            "slotMinutes": 20,
            "weekly": ALL_DAY[:1],
        }
        changed = await events.wait_for(
            lambda e: isinstance(e.data, DoctorUpdated) and e.subject == doctor["id"]
        )
        assert isinstance(changed.data, DoctorUpdated)
        assert changed.data.schedule_changed


async def test_bad_doctor_requests_get_clear_errors(api: httpx.AsyncClient) -> None:
    missing = await api.get("/v1/doctors/no-such-doctor")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "doctor_not_found"
    overlap = await api.post(
        "/v1/doctors",
        json={
            "name": "Dr. X",
            "specialty": "Clínica Médica",
            "city": "Recife",
            "schedule": {
                "weekly": [
                    {"day": "mon", "start": "09:00", "end": "11:00"},
                    {"day": "mon", "start": "10:00", "end": "12:00"},
                ]
            },
        },
    )
    assert overlap.status_code == 400
    assert overlap.json()["error"]["code"] == "invalid_request"
    assert "overlap" in overlap.json()["error"]["message"]
    bad_zone = await api.post(
        "/v1/doctors",
        json={
            "name": "Dr. X",
            "specialty": "Pediatria",
            "city": "Recife",
            "schedule": {"timezone": "Brasil/Recife"},
        },
    )
    assert bad_zone.status_code == 400
    assert "time zone" in bad_zone.json()["error"]["message"]
    unknown_field = await api.post(
        "/v1/doctors", json={"name": "X", "specialty": "Y", "city": "Z", "salary": 1}
    )
    assert unknown_field.status_code == 400
    bad_time = await api.post(
        "/v1/doctors",
        json={
            "name": "X",
            "specialty": "Y",
            "city": "Z",
            "schedule": {"weekly": [{"day": "mon", "start": "9h", "end": "10:00"}]},
        },
    )
    assert bad_time.status_code == 400


async def test_search_matches_words_without_case_or_accents(api: httpx.AsyncClient) -> None:
    city = f"Itu {tag()}"
    cardio = await new_doctor(api, name="Dr. João Pereira", city=city)
    derma = await new_doctor(
        api, name="Dra. Lúcia Prado", specialty="Dermatologia", city=city, insurances=["SulAmérica"]
    )
    retired = await new_doctor(api, name="Dr. Velho Aposentado", city=city, active=False)

    async def names(**params: Any) -> list[str]:
        response = await api.get("/v1/doctors", params={"city": city, **params})
        assert response.status_code == 200, response.text
        return [d["name"] for d in response.json()["doctors"]]

    assert await names() == ["Dr. João Pereira", "Dra. Lúcia Prado"]  # by name, active only
    assert await names(specialty="CARDIOLOGIA") == ["Dr. João Pereira"]
    assert await names(specialty="dermato") == ["Dra. Lúcia Prado"]
    assert await names(name="joao") == ["Dr. João Pereira"]
    assert await names(name="lucia prado") == ["Dra. Lúcia Prado"]
    assert await names(insurance="sulamerica") == ["Dra. Lúcia Prado"]
    assert await names(insurance="unimed") == ["Dr. João Pereira"]
    assert await names(insurance="amil") == []
    assert await names(name="100%_") == []  # LIKE wildcards in input are literal
    assert await names(includeInactive="true") == [
        "Dr. João Pereira",
        "Dr. Velho Aposentado",
        "Dra. Lúcia Prado",
    ]
    assert {cardio["id"], derma["id"]}.isdisjoint({retired["id"]})


async def test_search_by_next_availability_sorts_soonest_first(api: httpx.AsyncClient) -> None:
    city = f"Sorocaba {tag()}"
    zone = ZoneInfo("America/Sao_Paulo")
    later_day = (datetime.now(zone) + timedelta(days=3)).strftime("%a").lower()
    soon = await new_doctor(api, name="Zeca Sempre Livre", city=city)
    later = await new_doctor(
        api,
        name="Alice Daqui a Tres Dias",
        city=city,
        schedule={"weekly": [{"day": later_day, "start": "09:00", "end": "12:00"}]},
    )
    await new_doctor(api, name="Bruno Sem Agenda", city=city, schedule={"weekly": []})

    now = datetime.now(UTC)
    response = await api.get(
        "/v1/doctors",
        params={
            "city": city,
            "availableFrom": now.isoformat(),
            "availableUntil": (now + timedelta(days=7)).isoformat(),
        },
    )
    assert response.status_code == 200, response.text
    found = response.json()["doctors"]
    assert [d["id"] for d in found] == [soon["id"], later["id"]]
    assert found[0]["nextSlot"]["startsAt"] < found[1]["nextSlot"]["startsAt"]
    tomorrow = await api.get(
        "/v1/doctors",
        params={"city": city, "availableUntil": (now + timedelta(hours=1)).isoformat()},
    )
    assert [d["id"] for d in tomorrow.json()["doctors"]] == [soon["id"]]
    naive = await api.get("/v1/doctors", params={"availableFrom": "2026-03-02T09:00:00"})
    assert naive.status_code == 400
    assert naive.json()["error"]["code"] == "invalid_request"


async def test_book_reschedule_cancel_each_emit_one_event(
    api: httpx.AsyncClient, bus: Bus, pool: asyncpg.Pool, tenant_id: str
) -> None:
    doctor = await new_doctor(api)
    first, second, third = (s["startsAt"] for s in await free_slots(api, doctor["id"], 3))
    async with watch(
        bus, AppointmentBooked, AppointmentRescheduled, AppointmentCancelled, tenant=tenant_id
    ) as events:
        response = await api.post(
            "/v1/appointments",
            json=booking(
                doctor["id"],
                first,
                patient="paciente-42",
                patientName="Maria da Silva",
                patientContact="+55 11 99999-0000",
                reason="dor no peito",
                room="consulta-42",
            ),
        )
        assert response.status_code == 201, response.text
        appointment = response.json()
        assert appointment["status"] == "booked"
        assert appointment["startsAt"] == first
        assert appointment["doctorName"] == doctor["name"]
        assert appointment["channel"] == "api"

        booked = await events.wait_for(lambda e: e.subject == appointment["id"])
        assert isinstance(booked.data, AppointmentBooked)
        assert booked.data.patient_ref == "paciente-42"
        assert booked.data.doctor_id == doctor["id"]
        assert booked.data.starts_at == datetime.fromisoformat(first)
        # Business stream: the opaque reference only, never who the patient is or why they come.
        assert booked.source == "mediai/scheduling"
        for private in ("Maria", "99999", "peito"):
            assert private not in repr(booked)

        taken = await api.post("/v1/appointments", json=booking(doctor["id"], second, "outro"))
        assert taken.status_code == 201
        clash = await api.post(
            f"/v1/appointments/{appointment['id']}/reschedule", json={"startsAt": second}
        )
        assert clash.status_code == 409
        assert clash.json()["error"]["code"] == "slot_taken"

        moved = await api.post(
            f"/v1/appointments/{appointment['id']}/reschedule", json={"startsAt": third}
        )
        assert moved.status_code == 200, moved.text
        assert moved.json()["startsAt"] == third
        rescheduled = await events.wait_for(
            lambda e: e.subject == appointment["id"] and isinstance(e.data, AppointmentRescheduled)
        )
        assert isinstance(rescheduled.data, AppointmentRescheduled)
        assert rescheduled.data.previous_starts_at == datetime.fromisoformat(first)
        assert rescheduled.data.starts_at == datetime.fromisoformat(third)

        # The first slot is free again.
        again = await api.post("/v1/appointments", json=booking(doctor["id"], first, "p-3"))
        assert again.status_code == 201, again.text

        cancelled = await api.post(
            f"/v1/appointments/{appointment['id']}/cancel", json={"reason": "paciente pediu"}
        )
        assert cancelled.status_code == 200
        assert cancelled.json()["status"] == "cancelled"
        event = await events.wait_for(
            lambda e: e.subject == appointment["id"] and isinstance(e.data, AppointmentCancelled)
        )
        assert isinstance(event.data, AppointmentCancelled)
        assert event.data.starts_at == datetime.fromisoformat(third)

        twice = await api.post(f"/v1/appointments/{appointment['id']}/cancel")
        assert twice.status_code == 200
        assert twice.json()["cancelledAt"] == cancelled.json()["cancelledAt"]
        assert await outbox_events_about(pool, appointment["id"]) == 3  # booked, moved, cancelled
        gone = await api.post(
            f"/v1/appointments/{appointment['id']}/reschedule", json={"startsAt": first}
        )
        assert gone.status_code == 409
        assert gone.json()["error"]["code"] == "appointment_cancelled"


async def test_times_that_are_not_bookable_slots_are_refused(api: httpx.AsyncClient) -> None:
    doctor = await new_doctor(api)
    slot = datetime.fromisoformat((await free_slots(api, doctor["id"], 1))[0]["startsAt"])

    async def code(starts_at: str) -> tuple[int, str]:
        response = await api.post("/v1/appointments", json=booking(doctor["id"], starts_at))
        return response.status_code, response.json()["error"]["code"]

    assert await code((slot + timedelta(minutes=10)).isoformat()) == (422, "slot_unavailable")
    assert await code((slot - timedelta(days=2)).isoformat()) == (422, "slot_unavailable")
    assert await code(slot.replace(tzinfo=None).isoformat()) == (400, "invalid_request")
    missing = await api.post("/v1/appointments", json=booking("no-such-doctor", slot.isoformat()))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "doctor_not_found"
    bad_patient = await api.post(
        "/v1/appointments", json=booking(doctor["id"], slot.isoformat(), patient="a b")
    )
    assert bad_patient.status_code == 400
    retired = await new_doctor(api, active=False)
    response = await api.post("/v1/appointments", json=booking(retired["id"], slot.isoformat()))
    assert response.status_code == 422
    assert "not taking" in response.json()["error"]["message"]


async def test_twenty_concurrent_bookings_of_one_slot_make_exactly_one_appointment(
    api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    doctor = await new_doctor(api)
    slot = (await free_slots(api, doctor["id"], 1))[0]["startsAt"]
    requests = [
        api.post("/v1/appointments", json=booking(doctor["id"], slot, patient=f"patient-{i}"))
        for i in range(20)
    ]
    started = time.perf_counter()
    responses = await asyncio.gather(*requests)
    elapsed = time.perf_counter() - started

    statuses = Counter(r.status_code for r in responses)
    assert statuses == {201: 1, 409: 19}, [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            error = response.json()["error"]
            assert error["code"] == "slot_taken"
            assert "another" in error["message"]
    rows = await pool.fetch(
        "SELECT patient_ref FROM appointments WHERE doctor_id = $1", doctor["id"]
    )
    winner = next(r.json() for r in responses if r.status_code == 201)
    assert [row["patient_ref"] for row in rows] == [winner["patientRef"]]
    assert await outbox_events_about(pool, doctor["id"]) == 2  # DoctorCreated + one booking
    print(f"\n20 concurrent bookings of one slot through the gateway: {elapsed * 1000:.0f} ms")


async def test_an_idempotency_key_makes_a_retried_booking_return_the_first(
    api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    doctor = await new_doctor(api)
    slot = (await free_slots(api, doctor["id"], 1))[0]["startsAt"]
    key = {"Idempotency-Key": f"retry-{tag()}"}
    first = await api.post("/v1/appointments", json=booking(doctor["id"], slot), headers=key)
    retry = await api.post("/v1/appointments", json=booking(doctor["id"], slot), headers=key)
    assert first.status_code == retry.status_code == 201
    assert first.json()["id"] == retry.json()["id"]
    assert await outbox_events_about(pool, first.json()["id"]) == 1


async def test_appointments_are_listed_by_doctor_patient_and_status(api: httpx.AsyncClient) -> None:
    doctor = await new_doctor(api)
    patient = f"p-{tag()}"
    slots = [s["startsAt"] for s in await free_slots(api, doctor["id"], 3)]
    made = [
        (await api.post("/v1/appointments", json=booking(doctor["id"], s, patient))).json()
        for s in slots
    ]
    await api.post(f"/v1/appointments/{made[1]['id']}/cancel")

    async def ids(**params: Any) -> list[str]:
        response = await api.get("/v1/appointments", params=params)
        assert response.status_code == 200, response.text
        return [a["id"] for a in response.json()["appointments"]]

    assert await ids(doctorId=doctor["id"]) == [a["id"] for a in made]  # soonest first
    assert await ids(patientRef=patient, status="booked") == [made[0]["id"], made[2]["id"]]
    assert await ids(patientRef=patient, status="cancelled") == [made[1]["id"]]
    assert await ids(patientRef=patient, **{"from": slots[2]}) == [made[2]["id"]]
    got = await api.get(f"/v1/appointments/{made[0]['id']}")
    assert got.status_code == 200
    assert got.json()["patientRef"] == patient


async def test_a_tenant_never_sees_another_tenants_doctors_or_appointments(
    api: httpx.AsyncClient, other_api: httpx.AsyncClient
) -> None:
    doctor = await new_doctor(api, city=f"Niterói {tag()}")
    slot = (await free_slots(api, doctor["id"], 1))[0]["startsAt"]
    appointment = (await api.post("/v1/appointments", json=booking(doctor["id"], slot))).json()
    doctor_url = f"/v1/doctors/{doctor['id']}"
    appointment_url = f"/v1/appointments/{appointment['id']}"

    for response, code in [
        (await other_api.get(doctor_url), "doctor_not_found"),
        (await other_api.patch(doctor_url, json={"name": "Hijack"}), "doctor_not_found"),
        (await other_api.get(f"{doctor_url}/slots"), "doctor_not_found"),
        (
            await other_api.post("/v1/appointments", json=booking(doctor["id"], slot)),
            "doctor_not_found",
        ),
        (await other_api.get(appointment_url), "appointment_not_found"),
        (await other_api.post(f"{appointment_url}/cancel"), "appointment_not_found"),
        (
            await other_api.post(f"{appointment_url}/reschedule", json={"startsAt": slot}),
            "appointment_not_found",
        ),
    ]:
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == code
    listed = await other_api.get("/v1/doctors", params={"city": doctor["city"]})
    assert listed.json()["doctors"] == []
    mine = await other_api.get("/v1/appointments", params={"doctorId": doctor["id"]})
    assert mine.json()["appointments"] == []
    assert (await api.get(appointment_url)).json()["status"] == "booked"  # untouched
    assert (await api.get(doctor_url)).json()["name"] == doctor["name"]


async def test_scheduling_needs_an_api_key(stack: StackState) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url) as anonymous:
        for path in ("/v1/doctors", "/v1/appointments", "/v1/consultations/r1/anamnesis"):
            response = await anonymous.get(path)
            assert response.status_code == 401, path
