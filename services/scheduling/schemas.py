"""The HTTP shapes of scheduling (camelCase JSON), and the one mapping of its errors to HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

import msgspec
from litestar.openapi.datastructures import ResponseSpec

from services.scheduling import core
from services.scheduling.core import Schedule, SchedulingError, Slot, Window
from services.scheduling.store import Appointment, Doctor
from shared.contract import errors
from shared.http import ApiError
from shared.naming import PatientRef, RoomName

# Domain error code -> HTTP status; the code itself is what clients branch on.
STATUS = {
    "invalid_request": 400,
    "doctor_not_found": 404,
    "appointment_not_found": 404,
    "slot_taken": 409,
    "appointment_cancelled": 409,
    "slot_unavailable": 422,
}


# What each code means, for the OpenAPI document.
MEANING = {
    "invalid_request": "the request breaks a rule of scheduling (the message says which: an "
    "unknown time zone, a window that ends before it starts, a time without its offset...)",
    "doctor_not_found": "no doctor of that id in this tenant",
    "appointment_not_found": "no appointment of that id in this tenant",
    "slot_taken": "another patient has the slot",
    "appointment_cancelled": "the appointment is cancelled",
    "slot_unavailable": "the time is not the start of one of the doctor's free slots",
}


def responses(*codes: str) -> dict[int, ResponseSpec]:
    """An operation's error answers for OpenAPI, by the codes it can give."""
    by_status: dict[int, dict[str, str]] = {}
    for code in codes:
        by_status.setdefault(STATUS[code], {})[code] = MEANING[code]
    return errors(by_status)


@contextmanager
def api_errors() -> Iterator[None]:
    """Turn scheduling's domain errors into HTTP errors with the same code."""
    try:
        yield
    except SchedulingError as error:
        raise ApiError(str(error), code=error.code, status_code=STATUS[error.code]) from None


def aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ApiError(
            f"{name} needs a time zone offset (e.g. Z or -03:00)", code="invalid_request"
        )
    return value


# At least one visible character (msgspec patterns are searched, not anchored). Not "\S":
# Python's \s also takes U+001C-U+001F and U+0085, JavaScript's also U+FEFF, so each side would
# take names the other refuses (a client generated from the document checks in JavaScript).
VISIBLE = r"[^\s\x1c-\x1f\x85\ufeff]"
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=VISIBLE)]
ShortName = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=VISIBLE)]
Clock = Annotated[str, msgspec.Meta(pattern=core.CLOCK.pattern, examples=["08:00"])]
AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True, examples=["2026-03-02T09:00:00-03:00"])]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


class WindowBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Hours of one weekday, in the doctor's local time."""

    day: Weekday
    start: Clock
    end: Clock


class ScheduleBody(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True
):
    """A weekly schedule: each window is cut into slots of ``slotMinutes``."""

    timezone: Annotated[str, msgspec.Meta(examples=["America/Sao_Paulo"])] = core.DEFAULT_TIMEZONE
    slot_minutes: Annotated[int, msgspec.Meta(ge=5, le=480)] = 30
    weekly: list[WindowBody] = []

    def to_core(self) -> Schedule:
        return Schedule(
            timezone=self.timezone,
            slot_minutes=self.slot_minutes,
            weekly=tuple(Window(day=w.day, start=w.start, end=w.end) for w in self.weekly),
        )

    @classmethod
    def of(cls, schedule: Schedule) -> ScheduleBody:
        return cls(
            timezone=schedule.timezone,
            slot_minutes=schedule.slot_minutes,
            weekly=[
                WindowBody(day=w.day, start=w.start, end=w.end)  # type: ignore[arg-type]
                for w in schedule.weekly
            ],
        )


class CreateDoctorRequest(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True
):
    name: Name
    specialty: Annotated[ShortName, msgspec.Meta(examples=["Cardiologia"])]
    city: Annotated[ShortName, msgspec.Meta(examples=["São Paulo"])]
    # The doctor's council registration (CRM), e.g. "CRM/SP 123456".
    crm: Annotated[str, msgspec.Meta(max_length=40)] | None = None
    insurances: Annotated[list[Name], msgspec.Meta(max_length=100)] = []
    schedule: ScheduleBody = msgspec.field(default_factory=ScheduleBody)
    active: bool = True


class UpdateDoctorRequest(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True
):
    """Only the fields sent change; ``schedule`` is replaced whole."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    specialty: ShortName | msgspec.UnsetType = msgspec.UNSET
    city: ShortName | msgspec.UnsetType = msgspec.UNSET
    crm: Annotated[str, msgspec.Meta(max_length=40)] | msgspec.UnsetType | None = msgspec.UNSET
    insurances: Annotated[list[Name], msgspec.Meta(max_length=100)] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    schedule: ScheduleBody | msgspec.UnsetType = msgspec.UNSET
    active: bool | msgspec.UnsetType = msgspec.UNSET

    def changes(self) -> dict[str, Any]:
        """Doctor field -> new value, for the fields that were sent."""
        found: dict[str, Any] = {}
        for field in self.__struct_fields__:
            value = getattr(self, field)
            if value is msgspec.UNSET:
                continue
            if field == "schedule":
                value = value.to_core()
            elif field == "insurances":
                value = tuple(i.strip() for i in value)
            elif isinstance(value, str) and field != "crm":
                value = value.strip()
            found[field] = value
        return found


class SlotBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    starts_at: datetime
    ends_at: datetime

    @classmethod
    def of(cls, slot: Slot, zone: ZoneInfo) -> SlotBody:
        return cls(starts_at=slot.starts_at.astimezone(zone), ends_at=slot.ends_at.astimezone(zone))


class DoctorBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    id: str
    name: str
    specialty: str
    city: str
    crm: str | None
    insurances: list[str]
    schedule: ScheduleBody
    active: bool
    # The first free slot (from now, or from the search's availableFrom), in the doctor's zone.
    next_slot: SlotBody | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, doctor: Doctor, next_slot: Slot | None) -> DoctorBody:
        zone = doctor.schedule.zone
        return cls(
            id=doctor.id,
            name=doctor.name,
            specialty=doctor.specialty,
            city=doctor.city,
            crm=doctor.crm,
            insurances=list(doctor.insurances),
            schedule=ScheduleBody.of(doctor.schedule),
            active=doctor.active,
            next_slot=SlotBody.of(next_slot, zone) if next_slot else None,
            created_at=doctor.created_at,
            updated_at=doctor.updated_at,
        )


class DoctorList(msgspec.Struct, frozen=True, kw_only=True):
    doctors: list[DoctorBody]


class SlotList(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    doctor_id: str
    timezone: str
    slots: list[SlotBody]


class BookAppointmentRequest(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True
):
    doctor_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    # Must be the start of one of the doctor's slots (see GET /v1/doctors/{id}/slots).
    starts_at: AwareDatetime
    # The clinic's pseudonymous id of the patient (never a name, CPF or contact); it is the
    # only patient data that goes into events.
    patient_ref: PatientRef
    patient_name: Name | None = None
    patient_contact: Name | None = None
    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None
    # The consultation room, if the appointment is a video consultation.
    room: RoomName | None = None


class RescheduleAppointmentRequest(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True
):
    starts_at: AwareDatetime


class CancelAppointmentRequest(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True
):
    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None


class AppointmentBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    id: str
    doctor_id: str
    doctor_name: str
    specialty: str
    status: Literal["booked", "cancelled"]
    # In the doctor's time zone.
    starts_at: datetime
    ends_at: datetime
    timezone: str
    patient_ref: str
    patient_name: str | None
    patient_contact: str | None
    reason: str | None
    room: str | None
    channel: str
    created_at: datetime
    updated_at: datetime
    cancelled_at: datetime | None

    @classmethod
    def of(cls, a: Appointment) -> AppointmentBody:
        zone = ZoneInfo(a.timezone)
        return cls(
            id=a.id,
            doctor_id=a.doctor_id,
            doctor_name=a.doctor_name,
            specialty=a.specialty,
            status=a.status,  # type: ignore[arg-type]
            starts_at=a.starts_at.astimezone(zone),
            ends_at=a.ends_at.astimezone(zone),
            timezone=a.timezone,
            patient_ref=a.patient_ref,
            patient_name=a.patient_name,
            patient_contact=a.patient_contact,
            reason=a.reason,
            room=a.room,
            channel=a.channel,
            created_at=a.created_at,
            updated_at=a.updated_at,
            cancelled_at=a.cancelled_at,
        )


class AppointmentList(msgspec.Struct, frozen=True, kw_only=True):
    appointments: list[AppointmentBody]
