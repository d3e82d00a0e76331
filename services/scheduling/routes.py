"""Scheduling's HTTP routes: doctors, their free slots, and appointments (all tenant-scoped)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

import asyncpg
from litestar import get, patch, post
from litestar.params import Parameter
from litestar.types import ControllerRouterHandler

from services.scheduling import service
from services.scheduling.schemas import (
    AppointmentBody,
    AppointmentList,
    BookAppointmentRequest,
    CancelAppointmentRequest,
    CreateDoctorRequest,
    DoctorBody,
    DoctorList,
    RescheduleAppointmentRequest,
    SlotBody,
    SlotList,
    UpdateDoctorRequest,
    api_errors,
    aware,
)
from services.scheduling.store import AppointmentFilter, DoctorFilter
from shared.bus import Bus
from shared.idempotency import RequestIds, idempotent
from shared.naming import PATIENT_REF, PATIENT_REF_RULE
from shared.tenants import Tenant

Limit = Annotated[int, Parameter(ge=1, le=100)]
Offset = Annotated[int, Parameter(ge=0, le=10_000)]
Filter = Annotated[str | None, Parameter(max_length=100)]


def _now() -> datetime:
    return datetime.now(UTC)


@post("/v1/doctors", operation_id="createDoctor", summary="Register a doctor and their schedule")
async def create_doctor(
    data: CreateDoctorRequest,
    tenant: Tenant,
    pool: asyncpg.Pool,
    ids: RequestIds,
    bus: Bus,
) -> DoctorBody:
    now = _now()
    with api_errors():
        doctor = await service.create_doctor(
            pool,
            tenant.id,
            phi=bus.phi,
            doctor_id=ids.id("doctor"),
            name=data.name,
            specialty=data.specialty,
            city=data.city,
            crm=data.crm,
            insurances=data.insurances,
            schedule=data.schedule.to_core(),
            active=data.active,
            now=now,
        )
        _, slots = await service.doctor_slots(
            pool, tenant.id, doctor.id, after=None, until=None, limit=1, now=now
        )
    return DoctorBody.of(doctor, slots[0] if slots else None)


@get("/v1/doctors", operation_id="searchDoctors", summary="Search doctors")
async def search_doctors(
    tenant: Tenant,
    pool: asyncpg.Pool,
    specialty: Filter = None,
    name: Filter = None,
    city: Filter = None,
    insurance: Filter = None,
    available_from: Annotated[datetime | None, Parameter(query="availableFrom")] = None,
    available_until: Annotated[datetime | None, Parameter(query="availableUntil")] = None,
    include_inactive: Annotated[bool, Parameter(query="includeInactive")] = False,
    limit: Limit = 20,
    offset: Offset = 0,
) -> DoctorList:
    """Every filter must match (by words; case and accents do not matter). With
    ``availableFrom``/``availableUntil``, only doctors with a free slot starting in that window,
    soonest first; otherwise by name. Each doctor comes with its next free slot."""
    query = DoctorFilter(
        specialty=specialty,
        name=name,
        city=city,
        insurance=insurance,
        include_inactive=include_inactive,
    )
    with api_errors():
        found = await service.search_doctors(
            pool,
            tenant.id,
            query,
            available_from=aware(available_from, "availableFrom"),
            available_until=aware(available_until, "availableUntil"),
            limit=limit,
            offset=offset,
            now=_now(),
        )
    return DoctorList(doctors=[DoctorBody.of(doctor, slot) for doctor, slot in found])


@get("/v1/doctors/{doctor_id:str}", operation_id="getDoctor", summary="A doctor")
async def get_doctor(doctor_id: str, tenant: Tenant, pool: asyncpg.Pool) -> DoctorBody:
    with api_errors():
        doctor, slots = await service.doctor_slots(
            pool, tenant.id, doctor_id, after=None, until=None, limit=1, now=_now()
        )
    return DoctorBody.of(doctor, slots[0] if slots else None)


@patch("/v1/doctors/{doctor_id:str}", operation_id="updateDoctor", summary="Change a doctor")
async def update_doctor(
    doctor_id: str, data: UpdateDoctorRequest, tenant: Tenant, pool: asyncpg.Pool, bus: Bus
) -> DoctorBody:
    """Only the fields sent change. A new schedule does not move or cancel booked appointments."""
    now = _now()
    with api_errors():
        doctor = await service.update_doctor(
            pool, tenant.id, doctor_id, data.changes(), now, phi=bus.phi
        )
        _, slots = await service.doctor_slots(
            pool, tenant.id, doctor.id, after=None, until=None, limit=1, now=now
        )
    return DoctorBody.of(doctor, slots[0] if slots else None)


@get("/v1/doctors/{doctor_id:str}/slots", operation_id="listFreeSlots", summary="Free slots")
async def free_slots(
    doctor_id: str,
    tenant: Tenant,
    pool: asyncpg.Pool,
    start: Annotated[datetime | None, Parameter(query="from")] = None,
    until: datetime | None = None,
    limit: Limit = 20,
) -> SlotList:
    """A doctor's next free slots starting in ``[from, until)`` (default: from now)."""
    with api_errors():
        doctor, slots = await service.doctor_slots(
            pool,
            tenant.id,
            doctor_id,
            after=aware(start, "from"),
            until=aware(until, "until"),
            limit=limit,
            now=_now(),
        )
    zone = doctor.schedule.zone
    return SlotList(
        doctor_id=doctor.id,
        timezone=doctor.schedule.timezone,
        slots=[SlotBody.of(slot, zone) for slot in slots],
    )


@post("/v1/appointments", operation_id="bookAppointment", summary="Book a slot")
async def book_appointment(
    data: BookAppointmentRequest,
    tenant: Tenant,
    pool: asyncpg.Pool,
    ids: RequestIds,
) -> AppointmentBody:
    """409 ``slot_taken`` when another patient has the slot; 422 ``slot_unavailable`` when the
    time is not one of the doctor's slots. With ``Idempotency-Key``, a retry returns the first
    request's appointment instead of booking again (the key is also kept on the appointment, so
    a retry after a 5xx finds the booking that did commit)."""
    booking = service.Booking(
        doctor_id=data.doctor_id,
        starts_at=data.starts_at,
        patient_ref=data.patient_ref,
        patient_name=data.patient_name,
        patient_contact=data.patient_contact,
        reason=data.reason,
        room=data.room,
        request_key=ids.key,
        channel="api",
    )
    with api_errors():
        appointment, _ = await service.book(pool, tenant.id, booking, now=_now())
    return AppointmentBody.of(appointment)


@get("/v1/appointments", operation_id="listAppointments", summary="List appointments")
async def list_appointments(
    tenant: Tenant,
    pool: asyncpg.Pool,
    doctor_id: Annotated[str | None, Parameter(query="doctorId")] = None,
    patient_ref: Annotated[
        str | None,
        Parameter(query="patientRef", pattern=PATIENT_REF.pattern, description=PATIENT_REF_RULE),
    ] = None,
    status: Literal["booked", "cancelled"] | None = None,
    start: Annotated[datetime | None, Parameter(query="from")] = None,
    until: datetime | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> AppointmentList:
    """Appointments starting in ``[from, until)``, soonest first."""
    query = AppointmentFilter(
        doctor_id=doctor_id,
        patient_ref=patient_ref,
        status=status,
        starts_from=aware(start, "from"),
        starts_before=aware(until, "until"),
    )
    found = await service.list_appointments(pool, tenant.id, query, limit=limit, offset=offset)
    return AppointmentList(appointments=[AppointmentBody.of(a) for a in found])


@get(
    "/v1/appointments/{appointment_id:str}", operation_id="getAppointment", summary="An appointment"
)
async def get_appointment(
    appointment_id: str, tenant: Tenant, pool: asyncpg.Pool
) -> AppointmentBody:
    with api_errors():
        return AppointmentBody.of(await service.get_appointment(pool, tenant.id, appointment_id))


@post(
    "/v1/appointments/{appointment_id:str}/reschedule",
    status_code=200,
    operation_id="rescheduleAppointment",
    summary="Move an appointment to another slot",
)
async def reschedule_appointment(
    appointment_id: str, data: RescheduleAppointmentRequest, tenant: Tenant, pool: asyncpg.Pool
) -> AppointmentBody:
    with api_errors():
        appointment, _ = await service.reschedule(
            pool, tenant.id, appointment_id, data.starts_at, channel="api", now=_now()
        )
    return AppointmentBody.of(appointment)


@post(
    "/v1/appointments/{appointment_id:str}/cancel",
    status_code=200,
    operation_id="cancelAppointment",
    summary="Cancel an appointment",
)
async def cancel_appointment(
    appointment_id: str,
    tenant: Tenant,
    pool: asyncpg.Pool,
    data: CancelAppointmentRequest | None = None,
) -> AppointmentBody:
    """Cancelling a cancelled appointment returns it unchanged."""
    with api_errors():
        appointment = await service.cancel(
            pool,
            tenant.id,
            appointment_id,
            reason=data.reason if data else None,
            channel="api",
            now=_now(),
        )
    return AppointmentBody.of(appointment)


# Reschedule and cancel change an appointment to a stated end (the same slot, cancelled), so a
# retry changes nothing: they need no key.
ROUTES: list[ControllerRouterHandler] = [
    idempotent(create_doctor),
    search_doctors,
    get_doctor,
    update_doctor,
    free_slots,
    idempotent(book_appointment),
    list_appointments,
    get_appointment,
    reschedule_appointment,
    cancel_appointment,
]
