"""The request/reply contract of the scheduling service over core NATS (the agent's tools use it).

Types and framing only; what may be booked is decided by the scheduling service. A caller sends
one ``*Request`` as JSON to ``subjects.scheduling_request_subject(Request.OPERATION)`` and gets
back a ``Reply`` whose ``result`` is the operation's reply, or whose ``error`` says why not with
a stable ``code`` (``ERROR_CODES``) and an English message. ``call`` does all of that::

    try:
        booked = await call(nc, BookRequest(dispatch_id=..., doctor_id=..., starts_at=..., ...))
    except SchedulingRequestError as error:
        if error.code == "slot_taken": ...

Times are timezone-aware; the service answers them in the doctor's own time zone (the offset is
in the value), ready to be read to a patient.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Generic, Literal, TypeVar

import msgspec
import nats.errors
from nats.aio.client import Client as NatsClient

from shared.naming import PatientRef, RoomName
from shared.subjects import scheduling_request_subject
from shared.telemetry import inject

ErrorCode = Literal[
    "slot_taken",  # another patient has this slot: offer the next free ones
    "slot_unavailable",  # not a slot of the doctor's schedule, in the past, or doctor inactive
    "doctor_not_found",
    "appointment_not_found",
    "appointment_cancelled",  # the appointment was cancelled: it cannot be moved
    "invalid_request",  # the request does not match this contract
    "dispatch_not_live",  # the request's dispatch is unknown, failed or ended
    "unavailable",  # the service is down, too slow, or failed: retry later
]
ERROR_CODES: tuple[str, ...] = ErrorCode.__args__  # type: ignore[attr-defined]

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
Filter = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
Text = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]

ReplyT = TypeVar("ReplyT")


class Slot(msgspec.Struct, frozen=True, kw_only=True):
    starts_at: AwareDatetime
    ends_at: AwareDatetime


class Doctor(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    specialty: str
    city: str
    insurances: list[str]
    timezone: str
    # The first free slot from the search's ``available_from`` (or now), if any.
    next_slot: Slot | None = None


class Appointment(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    doctor_id: str
    doctor_name: str
    specialty: str
    status: Literal["booked", "cancelled"]
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    timezone: str
    patient_ref: str
    room: str | None = None


class SearchDoctorsReply(msgspec.Struct, frozen=True, kw_only=True):
    doctors: list[Doctor]
    # When nothing matched: the specialties this clinic has, so the caller can ask again.
    known_specialties: list[str] = []


class NextSlotsReply(msgspec.Struct, frozen=True, kw_only=True):
    doctor: Doctor
    slots: list[Slot]


class AppointmentReply(msgspec.Struct, frozen=True, kw_only=True):
    appointment: Appointment


class RescheduleReply(msgspec.Struct, frozen=True, kw_only=True):
    appointment: Appointment
    previous: Slot


class FindAppointmentsReply(msgspec.Struct, frozen=True, kw_only=True):
    appointments: list[Appointment]


class Request(msgspec.Struct, Generic[ReplyT], frozen=True, kw_only=True):
    """A request to the scheduling service from an agent, for the dispatch it runs.

    It names no tenant: the service answers for the tenant of ``dispatch_id`` while that
    dispatch is live (requested, and not failed or ended), and refuses with
    ``dispatch_not_live`` otherwise. An agent worker runs every tenant's dispatches under one
    NATS user, so a tenant in the request would be the agent's word; the dispatch's tenant is
    the dispatcher's (docs/deployment.md, "Who may do what on the bus").
    """

    OPERATION: ClassVar[str]
    REPLY: ClassVar[type[Any]]
    dispatch_id: Id


class SearchDoctorsRequest(Request[SearchDoctorsReply], frozen=True, kw_only=True):
    """Active doctors matching every filter given (words, case and accents do not matter)."""

    OPERATION: ClassVar[str] = "search_doctors"
    REPLY: ClassVar[type[Any]] = SearchDoctorsReply
    specialty: Filter | None = None
    name: Filter | None = None
    city: Filter | None = None
    insurance: Filter | None = None
    # Only doctors with a free slot starting in [available_from, available_until).
    available_from: AwareDatetime | None = None
    available_until: AwareDatetime | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=20)] = 5


class NextSlotsRequest(Request[NextSlotsReply], frozen=True, kw_only=True):
    """The next free slots of one doctor, from ``after`` (default now), before ``before``."""

    OPERATION: ClassVar[str] = "next_slots"
    REPLY: ClassVar[type[Any]] = NextSlotsReply
    doctor_id: Id
    after: AwareDatetime | None = None
    before: AwareDatetime | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=50)] = 5


class BookRequest(Request[AppointmentReply], frozen=True, kw_only=True):
    """Book the slot of ``doctor_id`` starting at ``starts_at`` for a patient.

    ``request_id`` makes a retry safe: a second request with the same id returns the
    appointment the first one made instead of booking again (or failing with ``slot_taken``).
    """

    OPERATION: ClassVar[str] = "book"
    REPLY: ClassVar[type[Any]] = AppointmentReply
    doctor_id: Id
    starts_at: AwareDatetime
    patient_ref: PatientRef
    patient_name: Text | None = None
    patient_contact: Text | None = None
    reason: Annotated[str, msgspec.Meta(max_length=500)] | None = None
    room: RoomName | None = None
    request_id: Id | None = None


class RescheduleRequest(Request[RescheduleReply], frozen=True, kw_only=True):
    """Move a booked appointment to another slot of the same doctor.

    With ``patient_ref``, only that patient's appointment is found (others: not found).
    """

    OPERATION: ClassVar[str] = "reschedule"
    REPLY: ClassVar[type[Any]] = RescheduleReply
    appointment_id: Id
    starts_at: AwareDatetime
    patient_ref: PatientRef | None = None


class CancelRequest(Request[AppointmentReply], frozen=True, kw_only=True):
    """Cancel an appointment (cancelling a cancelled one changes nothing).

    With ``patient_ref``, only that patient's appointment is found (others: not found).
    """

    OPERATION: ClassVar[str] = "cancel"
    REPLY: ClassVar[type[Any]] = AppointmentReply
    appointment_id: Id
    patient_ref: PatientRef | None = None


class FindAppointmentsRequest(Request[FindAppointmentsReply], frozen=True, kw_only=True):
    """A patient's appointments, soonest first: upcoming booked ones unless told otherwise."""

    OPERATION: ClassVar[str] = "find_appointments"
    REPLY: ClassVar[type[Any]] = FindAppointmentsReply
    patient_ref: PatientRef
    doctor_id: Id | None = None
    include_past: bool = False
    include_cancelled: bool = False
    limit: Annotated[int, msgspec.Meta(ge=1, le=50)] = 10


OPERATIONS: dict[str, type[Request[Any]]] = {
    request.OPERATION: request
    for request in (
        SearchDoctorsRequest,
        NextSlotsRequest,
        BookRequest,
        RescheduleRequest,
        CancelRequest,
        FindAppointmentsRequest,
    )
}


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True):
    # A plain string on the wire, so a newer service's new code never breaks an older caller.
    code: str
    message: str


class Reply(msgspec.Struct, Generic[ReplyT], frozen=True, kw_only=True, omit_defaults=True):
    """The framing of every answer: exactly one of ``result`` and ``error``."""

    result: ReplyT | None = None
    error: ErrorInfo | None = None


class SchedulingRequestError(Exception):
    """The service answered with an error, or did not answer (``unavailable``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


_DECODERS: dict[type[Any], msgspec.json.Decoder[Reply[Any]]] = {
    request.REPLY: msgspec.json.Decoder(Reply[request.REPLY])  # type: ignore[name-defined]
    for request in OPERATIONS.values()
}


def encode_result(result: msgspec.Struct) -> bytes:
    return msgspec.json.encode(Reply(result=result))


def encode_error(code: ErrorCode, message: str) -> bytes:
    return msgspec.json.encode(Reply[Any](error=ErrorInfo(code=code, message=message)))


async def call(
    nc: NatsClient,
    request: Request[ReplyT],
    *,
    timeout: float = 5.0,
) -> ReplyT:
    """Send ``request`` and return its reply; raises SchedulingRequestError on any failure.

    A timeout does not say whether a ``book`` happened: retry with the same ``request_id``.
    """
    headers: dict[str, str] = {}
    inject(headers)
    subject = scheduling_request_subject(request.OPERATION)
    try:
        message = await nc.request(
            subject, msgspec.json.encode(request), timeout=timeout, headers=headers
        )
    except nats.errors.NoRespondersError:
        raise SchedulingRequestError(
            "unavailable", "the scheduling service is not running"
        ) from None
    except TimeoutError:  # nats-py's own, or asyncio's: both mean no answer in time
        raise SchedulingRequestError(
            "unavailable", "the scheduling service did not answer in time"
        ) from None
    try:
        reply = _DECODERS[request.REPLY].decode(message.data)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise SchedulingRequestError("unavailable", f"unreadable reply: {error}") from None
    if reply.error is not None:
        raise SchedulingRequestError(reply.error.code, reply.error.message)
    if reply.result is None:
        raise SchedulingRequestError("unavailable", "the reply had neither result nor error")
    result: ReplyT = reply.result
    return result
