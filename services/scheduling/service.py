"""Scheduling's operations: load, decide with the core, write the change and its event together.

The HTTP routes and the NATS request/reply endpoint both call these; they differ only in how
they read input and show output. Every change is written with its event through the outbox in
one transaction, so the appointments table and the event log never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import msgspec
import uuid6

from services.scheduling import core, store
from services.scheduling.core import Schedule, Slot
from services.scheduling.store import Appointment, Doctor, DoctorFilter
from shared.db import Connection
from shared.events.clinical import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentRescheduled,
    DoctorCreated,
    DoctorUpdated,
)
from shared.outbox import add_to_outbox
from shared.phi import Phi

SOURCE = "mediai/scheduling"
# Doctors looked at when a search filters or sorts by availability (computed, not indexed).
AVAILABILITY_CANDIDATES = 500


def new_id() -> str:
    return str(uuid6.uuid7())


def _utc(moment: datetime) -> datetime:
    # Events carry UTC, whatever zone the doctor works in (the API answers in the doctor's).
    return moment.astimezone(UTC)


class Booking(msgspec.Struct, frozen=True, kw_only=True):
    doctor_id: str
    starts_at: datetime
    patient_ref: str
    patient_name: str | None = None
    patient_contact: str | None = None
    reason: str | None = None
    room: str | None = None
    request_key: str | None = None
    channel: str = "api"


def _doctor_event(
    doctor: Doctor, *, created: bool, schedule_changed: bool = False
) -> DoctorCreated | DoctorUpdated:
    if created:
        return DoctorCreated(
            doctor_id=doctor.id,
            name=doctor.name,
            specialty=doctor.specialty,
            city=doctor.city,
            insurances=list(doctor.insurances),
            active=doctor.active,
        )
    return DoctorUpdated(
        doctor_id=doctor.id,
        name=doctor.name,
        specialty=doctor.specialty,
        city=doctor.city,
        insurances=list(doctor.insurances),
        active=doctor.active,
        schedule_changed=schedule_changed,
    )


async def create_doctor(
    pool: asyncpg.Pool,
    tenant_id: str,
    *,
    phi: Phi,
    doctor_id: str,
    name: str,
    specialty: str,
    city: str,
    crm: str | None,
    insurances: list[str],
    schedule: Schedule,
    active: bool,
    now: datetime,
) -> Doctor:
    doctor = Doctor(
        id=doctor_id,
        name=name.strip(),
        specialty=specialty.strip(),
        city=city.strip(),
        crm=crm,
        insurances=tuple(i.strip() for i in insurances),
        schedule=core.validate_schedule(schedule),
        active=active,
        created_at=now,
        updated_at=now,
    )
    async with pool.acquire() as conn, conn.transaction():
        # A retry of a request that did commit (its id derives from its idempotency key): the
        # doctor is there already, and is not announced twice.
        if (earlier := await store.get_doctor(conn, tenant_id, doctor_id)) is not None:
            return earlier
        await store.save_doctor(conn, tenant_id, doctor)
        await add_to_outbox(
            conn,
            _doctor_event(doctor, created=True),
            source=SOURCE,
            tenant=tenant_id,
            key=doctor.id,
            time=now,
            phi=phi,
        )
    return doctor


async def update_doctor(
    pool: asyncpg.Pool,
    tenant_id: str,
    doctor_id: str,
    changes: dict[str, Any],
    now: datetime,
    *,
    phi: Phi,
) -> Doctor:
    """Apply ``changes`` (Doctor field -> new value); the schedule is replaced whole."""
    if "schedule" in changes:
        core.validate_schedule(changes["schedule"])
    async with pool.acquire() as conn, conn.transaction():
        current = await store.get_doctor(conn, tenant_id, doctor_id, lock=True)
        if current is None:
            raise core.DoctorNotFoundError("no such doctor")
        doctor = msgspec.structs.replace(current, **changes, updated_at=now)
        await store.save_doctor(conn, tenant_id, doctor)
        event = _doctor_event(
            doctor, created=False, schedule_changed=doctor.schedule != current.schedule
        )
        await add_to_outbox(
            conn, event, source=SOURCE, tenant=tenant_id, key=doctor.id, time=now, phi=phi
        )
    return doctor


async def get_doctor(pool: asyncpg.Pool, tenant_id: str, doctor_id: str) -> Doctor:
    async with pool.acquire() as conn:
        doctor = await store.get_doctor(conn, tenant_id, doctor_id)
    if doctor is None:
        raise core.DoctorNotFoundError("no such doctor")
    return doctor


async def doctor_slots(
    pool: asyncpg.Pool,
    tenant_id: str,
    doctor_id: str,
    *,
    after: datetime | None,
    until: datetime | None,
    limit: int,
    now: datetime,
) -> tuple[Doctor, list[Slot]]:
    """A doctor and its next free slots in ``[after, until)`` (default: from now, to the
    horizon); an inactive doctor has none."""
    start, end = core.search_window(now, after, until)
    async with pool.acquire() as conn:
        doctor = await store.get_doctor(conn, tenant_id, doctor_id)
        if doctor is None:
            raise core.DoctorNotFoundError("no such doctor")
        booked = await store.booked_slots(conn, [doctor.id], start, end)
    if not doctor.active:
        return doctor, []
    slots = core.free_slots(doctor.schedule, booked[doctor.id], after=start, until=end, limit=limit)
    return doctor, slots


async def search_doctors(
    pool: asyncpg.Pool,
    tenant_id: str,
    query: DoctorFilter,
    *,
    available_from: datetime | None,
    available_until: datetime | None,
    limit: int,
    offset: int,
    now: datetime,
) -> Sequence[tuple[Doctor, Slot | None]]:
    """Doctors matching ``query``, each with its next free slot.

    Without an availability filter: by name. With one: only doctors with a free slot starting
    in the window, soonest first.
    """
    by_availability = available_from is not None or available_until is not None
    after, until = core.search_window(now, available_from, available_until)
    async with pool.acquire() as conn:
        if by_availability:
            doctors = await store.find_doctors(
                conn, tenant_id, query, limit=AVAILABILITY_CANDIDATES
            )
        else:
            doctors = await store.find_doctors(conn, tenant_id, query, limit=limit, offset=offset)
        booked = await store.booked_slots(conn, [d.id for d in doctors], after, until)
    found = [
        (
            d,
            core.next_free_slot(d.schedule, booked[d.id], after=after, until=until)
            if d.active
            else None,
        )
        for d in doctors
    ]
    if not by_availability:
        return found
    available = [(d, slot) for d, slot in found if slot is not None]
    available.sort(key=lambda pair: (pair[1].starts_at, core.fold(pair[0].name)))
    return available[offset : offset + limit]


async def known_specialties(pool: asyncpg.Pool, tenant_id: str) -> list[str]:
    async with pool.acquire() as conn:
        return await store.specialties(conn, tenant_id)


async def book(
    pool: asyncpg.Pool, tenant_id: str, booking: Booking, *, now: datetime
) -> tuple[Appointment, bool]:
    """Book a slot; returns the appointment and whether it was made now (False: a retry with
    the same ``request_key`` got the first one's appointment)."""
    async with pool.acquire() as conn:
        if booking.request_key and (
            earlier := await store.appointment_by_request(conn, tenant_id, booking.request_key)
        ):
            return earlier, False
        try:
            async with conn.transaction():
                doctor = await store.get_doctor(conn, tenant_id, booking.doctor_id)
                if doctor is None:
                    raise core.DoctorNotFoundError("no such doctor")
                if not doctor.active:
                    raise core.SlotUnavailableError("this doctor is not taking appointments")
                slot = core.offered_slot(doctor.schedule, booking.starts_at, now=now)
                appointment = Appointment(
                    id=new_id(),
                    doctor_id=doctor.id,
                    doctor_name=doctor.name,
                    specialty=doctor.specialty,
                    timezone=doctor.schedule.timezone,
                    patient_ref=booking.patient_ref,
                    patient_name=booking.patient_name,
                    patient_contact=booking.patient_contact,
                    reason=booking.reason,
                    room=booking.room,
                    status="booked",
                    starts_at=slot.starts_at,
                    ends_at=slot.ends_at,
                    channel=booking.channel,
                    created_at=now,
                    updated_at=now,
                    cancelled_at=None,
                )
                await store.insert_appointment(conn, tenant_id, appointment, booking.request_key)
                await add_to_outbox(
                    conn,
                    AppointmentBooked(
                        appointment_id=appointment.id,
                        doctor_id=doctor.id,
                        patient_ref=appointment.patient_ref,
                        starts_at=_utc(slot.starts_at),
                        ends_at=_utc(slot.ends_at),
                        channel=booking.channel,
                    ),
                    source=SOURCE,
                    tenant=tenant_id,
                    key=appointment.id,
                    time=now,
                )
        except (asyncpg.ExclusionViolationError, asyncpg.UniqueViolationError):
            # A concurrent retry with the same key may have won: then that is our appointment.
            if booking.request_key and (
                earlier := await store.appointment_by_request(conn, tenant_id, booking.request_key)
            ):
                return earlier, False
            raise core.SlotTakenError(
                "another patient has just booked this slot; choose another one"
            ) from None
    return appointment, True


async def _booked_appointment(
    conn: Connection, tenant_id: str, appointment_id: str, patient_ref: str | None
) -> Appointment:
    appointment = await store.get_appointment(conn, tenant_id, appointment_id, lock=True)
    if appointment is None or (patient_ref is not None and appointment.patient_ref != patient_ref):
        raise core.AppointmentNotFoundError("no such appointment")
    return appointment


async def reschedule(
    pool: asyncpg.Pool,
    tenant_id: str,
    appointment_id: str,
    starts_at: datetime,
    *,
    patient_ref: str | None = None,
    channel: str = "api",
    now: datetime,
) -> tuple[Appointment, Slot]:
    """Move a booked appointment to another slot of its doctor; returns it and its old slot."""
    async with pool.acquire() as conn:
        try:
            async with conn.transaction():
                current = await _booked_appointment(conn, tenant_id, appointment_id, patient_ref)
                if current.status != "booked":
                    raise core.AppointmentCancelledError("this appointment was cancelled")
                doctor = await store.get_doctor(conn, tenant_id, current.doctor_id)
                assert doctor is not None  # the foreign key guarantees it
                slot = core.offered_slot(doctor.schedule, starts_at, now=now)
                if slot == current.slot:
                    return current, current.slot
                await store.move_appointment(conn, tenant_id, current.id, slot, now)
                await add_to_outbox(
                    conn,
                    AppointmentRescheduled(
                        appointment_id=current.id,
                        doctor_id=current.doctor_id,
                        patient_ref=current.patient_ref,
                        previous_starts_at=_utc(current.starts_at),
                        previous_ends_at=_utc(current.ends_at),
                        starts_at=_utc(slot.starts_at),
                        ends_at=_utc(slot.ends_at),
                        channel=channel,
                    ),
                    source=SOURCE,
                    tenant=tenant_id,
                    key=current.id,
                    time=now,
                )
        except asyncpg.ExclusionViolationError:
            raise core.SlotTakenError("another patient has this slot; choose another one") from None
    moved = msgspec.structs.replace(
        current, starts_at=slot.starts_at, ends_at=slot.ends_at, updated_at=now
    )
    return moved, current.slot


async def cancel(
    pool: asyncpg.Pool,
    tenant_id: str,
    appointment_id: str,
    *,
    patient_ref: str | None = None,
    reason: str | None = None,
    channel: str = "api",
    now: datetime,
) -> Appointment:
    """Cancel an appointment; cancelling a cancelled one returns it unchanged (no event)."""
    async with pool.acquire() as conn, conn.transaction():
        current = await _booked_appointment(conn, tenant_id, appointment_id, patient_ref)
        if current.status == "cancelled":
            return current
        await store.cancel_appointment(conn, tenant_id, current.id, now, reason)
        await add_to_outbox(
            conn,
            AppointmentCancelled(
                appointment_id=current.id,
                doctor_id=current.doctor_id,
                patient_ref=current.patient_ref,
                starts_at=_utc(current.starts_at),
                ends_at=_utc(current.ends_at),
                channel=channel,
            ),
            source=SOURCE,
            tenant=tenant_id,
            key=current.id,
            time=now,
        )
    return msgspec.structs.replace(current, status="cancelled", cancelled_at=now, updated_at=now)


async def get_appointment(pool: asyncpg.Pool, tenant_id: str, appointment_id: str) -> Appointment:
    async with pool.acquire() as conn:
        appointment = await store.get_appointment(conn, tenant_id, appointment_id)
    if appointment is None:
        raise core.AppointmentNotFoundError("no such appointment")
    return appointment


async def list_appointments(
    pool: asyncpg.Pool,
    tenant_id: str,
    query: store.AppointmentFilter,
    *,
    limit: int,
    offset: int = 0,
) -> list[Appointment]:
    async with pool.acquire() as conn:
        return await store.find_appointments(conn, tenant_id, query, limit=limit, offset=offset)
