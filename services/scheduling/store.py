"""Scheduling's tables, in plain SQL: doctors, appointments and anamnesis records.

Every query names the tenant: a row of another tenant is simply not found.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import msgspec

from services.scheduling.core import Schedule, Slot, Window, fold, words
from shared.db import Connection


class Doctor(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    specialty: str
    city: str
    crm: str | None
    insurances: tuple[str, ...]
    schedule: Schedule
    active: bool
    created_at: datetime
    updated_at: datetime


class Appointment(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    doctor_id: str
    doctor_name: str
    specialty: str
    timezone: str
    patient_ref: str
    patient_name: str | None
    patient_contact: str | None
    reason: str | None
    room: str | None
    status: str  # "booked" | "cancelled"
    starts_at: datetime
    ends_at: datetime
    channel: str
    created_at: datetime
    updated_at: datetime
    cancelled_at: datetime | None
    cancel_reason: str | None = None

    @property
    def slot(self) -> Slot:
        return Slot(starts_at=self.starts_at, ends_at=self.ends_at)


class DoctorFilter(msgspec.Struct, frozen=True, kw_only=True):
    specialty: str | None = None
    name: str | None = None
    city: str | None = None
    insurance: str | None = None
    include_inactive: bool = False


class AppointmentFilter(msgspec.Struct, frozen=True, kw_only=True):
    doctor_id: str | None = None
    patient_ref: str | None = None
    status: str | None = None
    starts_from: datetime | None = None
    starts_before: datetime | None = None


def _like_all(text: str | None) -> list[str]:
    """LIKE patterns that together mean "contains every word" (wildcards in input escaped)."""
    escaped = (w.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for w in words(text))
    return [f"%{w}%" for w in escaped]


def _doctor(row: asyncpg.Record) -> Doctor:
    schedule = Schedule(
        timezone=row["timezone"],
        slot_minutes=row["slot_minutes"],
        weekly=tuple(msgspec.convert(row["weekly"], list[Window])),
    )
    return Doctor(
        id=row["id"],
        name=row["name"],
        specialty=row["specialty"],
        city=row["city"],
        crm=row["crm"],
        insurances=tuple(row["insurances"]),
        schedule=schedule,
        active=row["active"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def save_doctor(conn: Connection, tenant_id: str, doctor: Doctor) -> None:
    """Insert or replace a doctor (the folded search columns are derived here)."""
    await conn.execute(
        """
        INSERT INTO doctors (tenant_id, id, name, specialty, city, crm, insurances, name_key,
            specialty_key, city_key, insurance_keys, timezone, slot_minutes, weekly, active,
            created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
        ON CONFLICT (tenant_id, id) DO UPDATE SET name = excluded.name,
            specialty = excluded.specialty, city = excluded.city, crm = excluded.crm,
            insurances = excluded.insurances, name_key = excluded.name_key,
            specialty_key = excluded.specialty_key, city_key = excluded.city_key,
            insurance_keys = excluded.insurance_keys, timezone = excluded.timezone,
            slot_minutes = excluded.slot_minutes, weekly = excluded.weekly,
            active = excluded.active, updated_at = excluded.updated_at
        """,
        tenant_id,
        doctor.id,
        doctor.name,
        doctor.specialty,
        doctor.city,
        doctor.crm,
        list(doctor.insurances),
        fold(doctor.name),
        fold(doctor.specialty),
        fold(doctor.city),
        [fold(i) for i in doctor.insurances],
        doctor.schedule.timezone,
        doctor.schedule.slot_minutes,
        msgspec.to_builtins(list(doctor.schedule.weekly)),
        doctor.active,
        doctor.created_at,
        doctor.updated_at,
    )


_DOCTOR = "SELECT * FROM doctors WHERE tenant_id = $1 AND id = $2"
_DOCTOR_FOR_UPDATE = _DOCTOR + " FOR UPDATE"


async def get_doctor(
    conn: Connection, tenant_id: str, doctor_id: str, *, lock: bool = False
) -> Doctor | None:
    query = _DOCTOR_FOR_UPDATE if lock else _DOCTOR
    row = await conn.fetchrow(query, tenant_id, doctor_id)
    return _doctor(row) if row else None


async def find_doctors(
    conn: Connection, tenant_id: str, query: DoctorFilter, *, limit: int, offset: int = 0
) -> list[Doctor]:
    rows = await conn.fetch(
        """
        SELECT * FROM doctors
        WHERE tenant_id = $1 AND ($2 OR active)
          AND specialty_key LIKE ALL ($3::text[]) AND name_key LIKE ALL ($4::text[])
          AND city_key LIKE ALL ($5::text[])
          AND (cardinality($6::text[]) = 0
               OR EXISTS (SELECT 1 FROM unnest(insurance_keys) AS k WHERE k LIKE ALL ($6::text[])))
        ORDER BY name_key, id
        LIMIT $7 OFFSET $8
        """,
        tenant_id,
        query.include_inactive,
        _like_all(query.specialty),
        _like_all(query.name),
        _like_all(query.city),
        _like_all(query.insurance),
        limit,
        offset,
    )
    return [_doctor(row) for row in rows]


async def specialties(conn: Connection, tenant_id: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT DISTINCT ON (specialty_key) specialty FROM doctors"
        " WHERE tenant_id = $1 AND active ORDER BY specialty_key",
        tenant_id,
    )
    return [row["specialty"] for row in rows]


async def booked_slots(
    conn: Connection, doctor_ids: Sequence[str], after: datetime, until: datetime
) -> dict[str, list[Slot]]:
    """The booked slots of some doctors that overlap ``[after, until)``, per doctor."""
    rows = await conn.fetch(
        "SELECT doctor_id, starts_at, ends_at FROM appointments"
        " WHERE doctor_id = ANY($1::text[]) AND status = 'booked'"
        " AND ends_at > $2 AND starts_at < $3 ORDER BY starts_at",
        list(doctor_ids),
        after,
        until,
    )
    found: dict[str, list[Slot]] = {doctor_id: [] for doctor_id in doctor_ids}
    for row in rows:
        found[row["doctor_id"]].append(Slot(starts_at=row["starts_at"], ends_at=row["ends_at"]))
    return found


_APPOINTMENT = """
    SELECT a.*, d.name AS doctor_name, d.specialty, d.timezone
    FROM appointments a JOIN doctors d ON d.tenant_id = a.tenant_id AND d.id = a.doctor_id
"""


_APPOINTMENT_BY_ID = _APPOINTMENT + " WHERE a.tenant_id = $1 AND a.id = $2"


def _appointment(row: asyncpg.Record) -> Appointment:
    fields = {name: row[name] for name in Appointment.__struct_fields__}
    return Appointment(**fields)


async def insert_appointment(
    conn: Connection, tenant_id: str, appointment: Appointment, request_key: str | None
) -> None:
    """Raises asyncpg.ExclusionViolationError when the doctor is booked at an overlapping time."""
    a = appointment
    await conn.execute(
        """
        INSERT INTO appointments (tenant_id, id, doctor_id, patient_ref, patient_name,
            patient_contact, reason, room, status, starts_at, ends_at, channel, request_key,
            created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
        """,
        tenant_id,
        a.id,
        a.doctor_id,
        a.patient_ref,
        a.patient_name,
        a.patient_contact,
        a.reason,
        a.room,
        a.status,
        a.starts_at,
        a.ends_at,
        a.channel,
        request_key,
        a.created_at,
        a.updated_at,
    )


async def get_appointment(
    conn: Connection, tenant_id: str, appointment_id: str, *, lock: bool = False
) -> Appointment | None:
    query = _APPOINTMENT_BY_ID + (" FOR UPDATE OF a" if lock else "")
    row = await conn.fetchrow(query, tenant_id, appointment_id)
    return _appointment(row) if row else None


async def appointment_by_request(
    conn: Connection, tenant_id: str, request_key: str
) -> Appointment | None:
    row = await conn.fetchrow(
        _APPOINTMENT + " WHERE a.tenant_id = $1 AND a.request_key = $2", tenant_id, request_key
    )
    return _appointment(row) if row else None


async def move_appointment(
    conn: Connection, tenant_id: str, appointment_id: str, slot: Slot, now: datetime
) -> None:
    """Raises asyncpg.ExclusionViolationError when the new slot overlaps another booking."""
    await conn.execute(
        "UPDATE appointments SET starts_at = $3, ends_at = $4, updated_at = $5"
        " WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        appointment_id,
        slot.starts_at,
        slot.ends_at,
        now,
    )


async def cancel_appointment(
    conn: Connection,
    tenant_id: str,
    appointment_id: str,
    now: datetime,
    reason: str | None,
) -> None:
    await conn.execute(
        "UPDATE appointments SET status = 'cancelled', cancelled_at = $3, updated_at = $3,"
        " cancel_reason = $4 WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        appointment_id,
        now,
        reason,
    )


async def find_appointments(
    conn: Connection,
    tenant_id: str,
    query: AppointmentFilter,
    *,
    limit: int,
    offset: int = 0,
) -> list[Appointment]:
    rows = await conn.fetch(
        _APPOINTMENT
        + """
        WHERE a.tenant_id = $1 AND ($2::text IS NULL OR a.doctor_id = $2)
          AND ($3::text IS NULL OR a.patient_ref = $3) AND ($4::text IS NULL OR a.status = $4)
          AND ($5::timestamptz IS NULL OR a.starts_at >= $5)
          AND ($6::timestamptz IS NULL OR a.starts_at < $6)
        ORDER BY a.starts_at, a.id
        LIMIT $7 OFFSET $8
        """,
        tenant_id,
        query.doctor_id,
        query.patient_ref,
        query.status,
        query.starts_from,
        query.starts_before,
        limit,
        offset,
    )
    return [_appointment(row) for row in rows]


async def insert_anamnesis(
    conn: Connection,
    *,
    tenant_id: str,
    event_id: str,
    recorded_at: datetime,
    room: str,
    dispatch_id: str,
    patient_ref: str,
    appointment_id: str,
    record: dict[str, Any],
) -> None:
    await conn.execute(
        """
        INSERT INTO anamnesis_records (event_id, tenant_id, room, dispatch_id, patient_ref,
            appointment_id, recorded_at, questionnaire_response, summary_pt_br, transcript_refs)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (event_id) DO NOTHING
        """,
        event_id,
        tenant_id,
        room,
        dispatch_id,
        patient_ref,
        appointment_id,
        recorded_at,
        record["questionnaire_response"],
        record["summary_pt_br"],
        record["transcript_refs"],
    )


async def dispatch_anamnesis(
    conn: Connection, tenant_id: str, dispatch_id: str
) -> asyncpg.Record | None:
    """The newest record a dispatch (one consultation) made (by the time the agent recorded
    it, then by event id)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM anamnesis_records WHERE tenant_id = $1 AND dispatch_id = $2"
        " ORDER BY recorded_at DESC, event_id DESC LIMIT 1",
        tenant_id,
        dispatch_id,
    )
    return row


async def appointment_anamnesis(
    conn: Connection, tenant_id: str, appointment_id: str
) -> asyncpg.Record | None:
    """The newest record of the dispatches made for an appointment, about the appointment's own
    patient: a dispatch that named the appointment but another patient is not its record."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT r.* FROM anamnesis_records r JOIN appointments a"
        " ON a.tenant_id = r.tenant_id AND a.id = r.appointment_id"
        " AND a.patient_ref = r.patient_ref"
        " WHERE r.tenant_id = $1 AND r.appointment_id = $2"
        " ORDER BY r.recorded_at DESC, r.event_id DESC LIMIT 1",
        tenant_id,
        appointment_id,
    )
    return row
