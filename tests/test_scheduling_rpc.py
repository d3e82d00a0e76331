"""Scheduling over NATS request/reply (the agent's path), against the stack's real NATS and
scheduling service; and the database constraint that makes double booking impossible."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import msgspec
import nats
import pytest

from deploy.bus_users import AGENT, ensure_credentials
from deploy.stack import StackState
from shared import scheduling_api as sched
from shared.bus import Bus
from shared.config import Settings
from shared.events.clinical import AppointmentBooked
from shared.subjects import inbox_prefix, scheduling_request_subject
from shared.tenants import authenticate
from tests.support import eventually, live_dispatch, watch

ALL_DAY = [
    {"day": d, "start": "00:00", "end": "23:30"}
    for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
]


def tag() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
async def tenant_id(pool: asyncpg.Pool, tenant_key: str) -> str:
    tenant = await authenticate(pool, tenant_key)
    assert tenant is not None
    return tenant.id


@pytest.fixture
async def other_tenant_id(pool: asyncpg.Pool, other_tenant_key: str) -> str:
    tenant = await authenticate(pool, other_tenant_key)
    assert tenant is not None
    return tenant.id


@asynccontextmanager
async def live_dispatch_of(stack: StackState, key: str) -> AsyncIterator[str]:
    """A live dispatch of the tenant of ``key`` (tests.support.live_dispatch)."""
    async with (
        httpx.AsyncClient(
            base_url=stack.gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        ) as client,
        live_dispatch(client) as dispatch_id,
    ):
        yield dispatch_id


@pytest.fixture(scope="module")
async def dispatch_id(stack: StackState, tenant_key: str) -> AsyncIterator[str]:
    async with live_dispatch_of(stack, tenant_key) as dispatch:
        yield dispatch


@pytest.fixture(scope="module")
async def other_dispatch_id(stack: StackState, other_tenant_key: str) -> AsyncIterator[str]:
    async with live_dispatch_of(stack, other_tenant_key) as dispatch:
        yield dispatch


async def new_doctor(api_client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {
        "name": f"Dr. Paulo Lima {tag()}",
        "specialty": "Ortopedia",
        "city": "Curitiba",
        "insurances": ["Amil"],
        "schedule": {"slotMinutes": 30, "weekly": ALL_DAY},
        **fields,
    }
    response = await api_client.post("/v1/doctors", json=body)
    assert response.status_code == 201, response.text
    doctor: dict[str, Any] = response.json()
    return doctor


async def test_search_and_next_slots_answer_with_typed_replies(
    bus: Bus, api: httpx.AsyncClient, tenant_id: str, dispatch_id: str
) -> None:
    city = f"Londrina {tag()}"
    doctor = await new_doctor(api, city=city, name="Dra. Tânia Ribeiro")
    found = await api_call(
        bus,
        sched.SearchDoctorsRequest(
            dispatch_id=dispatch_id, specialty="ortopedia", city=city.upper(), insurance="amil"
        ),
    )
    assert [d.id for d in found.doctors] == [doctor["id"]]
    assert found.doctors[0].next_slot is not None
    assert found.doctors[0].next_slot.starts_at.utcoffset() == timedelta(hours=-3)

    nothing = await api_call(
        bus, sched.SearchDoctorsRequest(dispatch_id=dispatch_id, specialty="ortopedista", city=city)
    )
    assert nothing.doctors == []
    assert "Ortopedia" in nothing.known_specialties

    slots = await api_call(
        bus, sched.NextSlotsRequest(dispatch_id=dispatch_id, doctor_id=doctor["id"], limit=3)
    )
    assert slots.doctor.name == "Dra. Tânia Ribeiro"
    assert len(slots.slots) == 3
    assert slots.slots[0] == found.doctors[0].next_slot
    later = datetime.now(UTC) + timedelta(days=2)
    after = await api_call(
        bus,
        sched.NextSlotsRequest(
            dispatch_id=dispatch_id, doctor_id=doctor["id"], after=later, limit=1
        ),
    )
    assert after.slots[0].starts_at >= later


async def api_call(bus: Bus, request: sched.Request[Any]) -> Any:
    return await sched.call(bus.nc, request, timeout=5)


async def test_book_reschedule_cancel_and_find_through_request_reply(
    bus: Bus, api: httpx.AsyncClient, tenant_id: str, dispatch_id: str
) -> None:
    doctor = await new_doctor(api)
    first, second = (
        await api_call(
            bus, sched.NextSlotsRequest(dispatch_id=dispatch_id, doctor_id=doctor["id"], limit=2)
        )
    ).slots
    patient = f"paciente-{tag()}"
    async with watch(bus, AppointmentBooked, tenant=tenant_id) as events:
        booked = await api_call(
            bus,
            sched.BookRequest(
                dispatch_id=dispatch_id,
                doctor_id=doctor["id"],
                starts_at=first.starts_at,
                patient_ref=patient,
                patient_name="José",
                room="sala-1",
                request_id=f"r-{tag()}",
            ),
        )
        event = await events.wait_for(lambda e: e.subject == booked.appointment.id)
    assert isinstance(event.data, AppointmentBooked)
    assert event.data.channel == "agent"
    appointment = booked.appointment
    assert (appointment.status, appointment.starts_at, appointment.room) == (
        "booked",
        first.starts_at,
        "sala-1",
    )

    mine = await api_call(
        bus, sched.FindAppointmentsRequest(dispatch_id=dispatch_id, patient_ref=patient)
    )
    assert [a.id for a in mine.appointments] == [appointment.id]

    # The agent acts for one patient: another patient's appointment is not found.
    with pytest.raises(sched.SchedulingRequestError) as stranger:
        await api_call(
            bus,
            sched.CancelRequest(
                dispatch_id=dispatch_id, appointment_id=appointment.id, patient_ref="someone-else"
            ),
        )
    assert stranger.value.code == "appointment_not_found"

    moved = await api_call(
        bus,
        sched.RescheduleRequest(
            dispatch_id=dispatch_id,
            appointment_id=appointment.id,
            starts_at=second.starts_at,
            patient_ref=patient,
        ),
    )
    assert moved.previous == first
    assert moved.appointment.starts_at == second.starts_at

    cancelled = await api_call(
        bus,
        sched.CancelRequest(
            dispatch_id=dispatch_id, appointment_id=appointment.id, patient_ref=patient
        ),
    )
    assert cancelled.appointment.status == "cancelled"
    assert (
        await api_call(
            bus, sched.FindAppointmentsRequest(dispatch_id=dispatch_id, patient_ref=patient)
        )
    ).appointments == []
    history = await api_call(
        bus,
        sched.FindAppointmentsRequest(
            dispatch_id=dispatch_id, patient_ref=patient, include_cancelled=True
        ),
    )
    assert [a.status for a in history.appointments] == ["cancelled"]


async def test_errors_come_back_typed_for_the_agent_to_explain(
    bus: Bus, api: httpx.AsyncClient, dispatch_id: str, other_dispatch_id: str
) -> None:
    doctor = await new_doctor(api)
    slot = (
        await api_call(
            bus, sched.NextSlotsRequest(dispatch_id=dispatch_id, doctor_id=doctor["id"], limit=1)
        )
    ).slots[0]

    async def code(request: sched.Request[Any]) -> str:
        with pytest.raises(sched.SchedulingRequestError) as error:
            await api_call(bus, request)
        return error.value.code

    book = sched.BookRequest(
        dispatch_id=dispatch_id, doctor_id=doctor["id"], starts_at=slot.starts_at, patient_ref="p-1"
    )
    await api_call(bus, book)
    assert await code(msgspec.structs.replace(book, patient_ref="p-2")) == "slot_taken"
    assert await code(msgspec.structs.replace(book, doctor_id="nope")) == "doctor_not_found"
    assert (
        await code(msgspec.structs.replace(book, starts_at=slot.starts_at + timedelta(minutes=7)))
        == "slot_unavailable"
    )
    # Another tenant's agent cannot see this doctor at all.
    assert (
        await code(msgspec.structs.replace(book, dispatch_id=other_dispatch_id))
        == "doctor_not_found"
    )
    assert await code(sched.CancelRequest(dispatch_id=dispatch_id, appointment_id="nope")) == (
        "appointment_not_found"
    )
    assert (
        await code(
            sched.SearchDoctorsRequest(
                dispatch_id=dispatch_id,
                available_from=datetime.now(UTC) + timedelta(days=2),
                available_until=datetime.now(UTC) + timedelta(days=1),
            )
        )
        == "invalid_request"
    )


async def test_an_agent_asking_for_another_tenants_data_is_refused(
    settings: Settings, api: httpx.AsyncClient, dispatch_id: str, other_tenant_id: str
) -> None:
    """The agent workers' own NATS user asks. A tenant in the request is not the contract and
    changes nothing: the answer is for the tenant of the dispatch named, and a dispatch that is
    unknown or over gets nothing at all."""
    doctor = await new_doctor(api, name=f"Dra. Única {tag()}")
    passwords = ensure_credentials(settings.data_dir)
    agent = await nats.connect(
        settings.nats_url, user=AGENT, password=passwords[AGENT], inbox_prefix=inbox_prefix(AGENT)
    )

    async def ask(request: dict[str, Any]) -> sched.Reply[sched.NextSlotsReply]:
        subject = scheduling_request_subject("next_slots")
        message = await agent.request(subject, msgspec.json.encode(request), timeout=10)
        return msgspec.json.decode(message.data, type=sched.Reply[sched.NextSlotsReply])

    try:
        mine = await ask({"dispatch_id": dispatch_id, "doctor_id": doctor["id"]})
        assert mine.result is not None and mine.result.doctor.id == doctor["id"]
        # Naming another tenant (an agent misled, or a forged request) still asks as the
        # dispatch's own tenant: the other tenant's doctors are not found, and this one is.
        forged = await ask(
            {"dispatch_id": dispatch_id, "tenant": other_tenant_id, "doctor_id": doctor["id"]}
        )
        assert forged.result is not None and forged.result.doctor.id == doctor["id"]
        for dispatch in ("0195f000-0000-7000-8000-000000000000", "nope"):
            refused = await ask({"dispatch_id": dispatch, "doctor_id": doctor["id"]})
            assert refused.error is not None and refused.error.code == "dispatch_not_live"
    finally:
        await agent.close()


async def test_a_dispatch_that_ended_is_refused(
    stack: StackState, tenant_key: str, bus: Bus, api: httpx.AsyncClient
) -> None:
    doctor = await new_doctor(api)
    async with live_dispatch_of(stack, tenant_key) as dispatch:
        request = sched.NextSlotsRequest(dispatch_id=dispatch, doctor_id=doctor["id"], limit=1)
        assert (await api_call(bus, request)).doctor.id == doctor["id"]

    # Ended (DELETE /v1/agents/{id}): once its end is in the log, its agent may not ask any more.
    async def refused() -> bool:
        try:
            await api_call(bus, request)
        except sched.SchedulingRequestError as error:
            return error.code == "dispatch_not_live"
        return False

    await eventually(refused, timeout=60)


async def test_malformed_requests_get_invalid_request_not_silence(bus: Bus) -> None:
    naive_time = b'{"dispatch_id": "d1", "doctor_id": "d", "starts_at": "2026-03-02T09:00"}'
    for payload in (b"not json", b'{"tenant": "tabcdefghij"}', naive_time):
        message = await bus.nc.request(scheduling_request_subject("book"), payload, timeout=5)
        reply = msgspec.json.decode(message.data, type=sched.Reply[sched.AppointmentReply])
        assert reply.result is None
        assert reply.error is not None
        assert reply.error.code == "invalid_request", payload


async def test_no_service_on_a_subject_is_reported_as_unavailable(bus: Bus) -> None:
    class Unknown(sched.Request[sched.AppointmentReply], frozen=True, kw_only=True):
        OPERATION = "no_such_operation"
        REPLY = sched.AppointmentReply

    with pytest.raises(sched.SchedulingRequestError) as error:
        await sched.call(bus.nc, Unknown(dispatch_id="d-1"), timeout=2)
    assert error.value.code == "unavailable"


async def test_a_retried_booking_with_the_same_request_id_returns_the_first(
    bus: Bus, api: httpx.AsyncClient, tenant_id: str, dispatch_id: str
) -> None:
    doctor = await new_doctor(api)
    slot = (
        await api_call(
            bus, sched.NextSlotsRequest(dispatch_id=dispatch_id, doctor_id=doctor["id"], limit=1)
        )
    ).slots[0]
    request = sched.BookRequest(
        dispatch_id=dispatch_id,
        doctor_id=doctor["id"],
        starts_at=slot.starts_at,
        patient_ref="p-1",
        request_id=f"call-{tag()}",
    )
    first, retry = [await api_call(bus, request) for _ in range(2)]
    assert first.appointment.id == retry.appointment.id


async def test_concurrent_agent_bookings_of_one_slot_make_one_appointment(
    bus: Bus, api: httpx.AsyncClient, tenant_id: str, dispatch_id: str
) -> None:
    doctor = await new_doctor(api)
    slot = (
        await api_call(
            bus, sched.NextSlotsRequest(dispatch_id=dispatch_id, doctor_id=doctor["id"], limit=1)
        )
    ).slots[0]

    async def attempt(i: int) -> str:
        try:
            await api_call(
                bus,
                sched.BookRequest(
                    dispatch_id=dispatch_id,
                    doctor_id=doctor["id"],
                    starts_at=slot.starts_at,
                    patient_ref=f"p-{i}",
                ),
            )
        except sched.SchedulingRequestError as error:
            return error.code
        return "booked"

    started = time.perf_counter()
    outcomes = Counter(await asyncio.gather(*(attempt(i) for i in range(20))))
    elapsed = time.perf_counter() - started
    assert outcomes == {"booked": 1, "slot_taken": 19}
    print(f"\n20 concurrent agent bookings over NATS: {elapsed * 1000:.0f} ms")


async def test_postgres_itself_refuses_overlapping_bookings_of_one_doctor(
    pool: asyncpg.Pool, api: httpx.AsyncClient, tenant_id: str
) -> None:
    """The guarantee is the exclusion constraint, not the service's code: even a row written by
    hand, of another length, cannot overlap a booked one; a cancelled one can."""
    doctor = await new_doctor(api)
    start = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)

    async def insert(minutes_in: int, length: int, status: str = "booked") -> None:
        begins = start + timedelta(minutes=minutes_in)
        await pool.execute(
            "INSERT INTO appointments (tenant_id, id, doctor_id, patient_ref, status, starts_at,"
            " ends_at, channel, created_at, updated_at) VALUES ($1, $2, $3, 'p', $4, $5, $6,"
            " 'test', now(), now())",
            tenant_id,
            str(uuid.uuid4()),
            doctor["id"],
            status,
            begins,
            begins + timedelta(minutes=length),
        )

    await insert(0, 30)
    with pytest.raises(asyncpg.ExclusionViolationError):
        await insert(15, 60)
    await insert(15, 60, status="cancelled")
    await insert(30, 30)  # back to back is fine
