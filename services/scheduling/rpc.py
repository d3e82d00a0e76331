"""Scheduling over core NATS request/reply, for the agent's tools (contract: shared.scheduling_api).

A request names the dispatch the agent runs; it is answered for that dispatch's tenant while
the dispatch is live (services/scheduling/dispatches.py), whatever else it says.

One subscription per operation in the ``scheduling`` queue group, so replicas share the load;
each request runs in its own task, so a slow booking never holds up a search. Every request
gets an answer: a result, or an error with a stable code (never silence until the timeout).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import msgspec
from litestar import Litestar
from nats.aio.msg import Msg
from opentelemetry.trace import SpanKind

from services.scheduling import core, dispatches, service
from services.scheduling.store import Appointment, AppointmentFilter, Doctor, DoctorFilter
from shared import attributes as attr
from shared import scheduling_api as api
from shared.phi import Phi
from shared.request_reply import serve
from shared.subjects import scheduling_request_subject
from shared.telemetry import extract, tracer

log = logging.getLogger(__name__)
_tracer = tracer(__name__)

QUEUE = "scheduling"


@dataclass(frozen=True)
class Context:
    """What the operations need: the database, and the sealing of personal columns."""

    pool: asyncpg.Pool
    phi: Phi


def _slot(slot: core.Slot, zone: ZoneInfo) -> api.Slot:
    return api.Slot(
        starts_at=slot.starts_at.astimezone(zone), ends_at=slot.ends_at.astimezone(zone)
    )


def _doctor(doctor: Doctor, next_slot: core.Slot | None = None) -> api.Doctor:
    zone = doctor.schedule.zone
    return api.Doctor(
        id=doctor.id,
        name=doctor.name,
        specialty=doctor.specialty,
        city=doctor.city,
        insurances=list(doctor.insurances),
        timezone=doctor.schedule.timezone,
        next_slot=_slot(next_slot, zone) if next_slot else None,
    )


def _appointment(a: Appointment) -> api.Appointment:
    zone = ZoneInfo(a.timezone)
    return api.Appointment(
        id=a.id,
        doctor_id=a.doctor_id,
        doctor_name=a.doctor_name,
        specialty=a.specialty,
        status=a.status,  # type: ignore[arg-type]
        starts_at=a.starts_at.astimezone(zone),
        ends_at=a.ends_at.astimezone(zone),
        timezone=a.timezone,
        patient_ref=a.patient_ref,
        room=a.room,
    )


async def search_doctors(
    ctx: Context, tenant: str, r: api.SearchDoctorsRequest, now: datetime
) -> api.SearchDoctorsReply:
    query = DoctorFilter(specialty=r.specialty, name=r.name, city=r.city, insurance=r.insurance)
    found = await service.search_doctors(
        ctx.pool,
        tenant,
        query,
        available_from=r.available_from,
        available_until=r.available_until,
        limit=r.limit,
        offset=0,
        now=now,
    )
    known = [] if found else await service.known_specialties(ctx.pool, tenant)
    return api.SearchDoctorsReply(
        doctors=[_doctor(doctor, slot) for doctor, slot in found], known_specialties=known
    )


async def next_slots(
    ctx: Context, tenant: str, r: api.NextSlotsRequest, now: datetime
) -> api.NextSlotsReply:
    doctor, slots = await service.doctor_slots(
        ctx.pool, tenant, r.doctor_id, after=r.after, until=r.before, limit=r.limit, now=now
    )
    zone = doctor.schedule.zone
    return api.NextSlotsReply(
        doctor=_doctor(doctor, slots[0] if slots else None),
        slots=[_slot(slot, zone) for slot in slots],
    )


async def book(
    ctx: Context, tenant: str, r: api.BookRequest, now: datetime
) -> api.AppointmentReply:
    booking = service.Booking(
        doctor_id=r.doctor_id,
        starts_at=r.starts_at,
        patient_ref=r.patient_ref,
        patient_name=r.patient_name,
        patient_contact=r.patient_contact,
        reason=r.reason,
        room=r.room,
        request_key=r.request_id,
        channel="agent",
    )
    appointment, _ = await service.book(ctx.pool, tenant, booking, now=now, phi=ctx.phi)
    return api.AppointmentReply(appointment=_appointment(appointment))


async def reschedule(
    ctx: Context, tenant: str, r: api.RescheduleRequest, now: datetime
) -> api.RescheduleReply:
    appointment, previous = await service.reschedule(
        ctx.pool,
        tenant,
        r.appointment_id,
        r.starts_at,
        patient_ref=r.patient_ref,
        channel="agent",
        now=now,
    )
    previous_slot = _slot(previous, ZoneInfo(appointment.timezone))
    return api.RescheduleReply(appointment=_appointment(appointment), previous=previous_slot)


async def cancel(
    ctx: Context, tenant: str, r: api.CancelRequest, now: datetime
) -> api.AppointmentReply:
    appointment = await service.cancel(
        ctx.pool,
        tenant,
        r.appointment_id,
        patient_ref=r.patient_ref,
        channel="agent",
        now=now,
        phi=ctx.phi,
    )
    return api.AppointmentReply(appointment=_appointment(appointment))


async def find_appointments(
    ctx: Context, tenant: str, r: api.FindAppointmentsRequest, now: datetime
) -> api.FindAppointmentsReply:
    query = AppointmentFilter(
        doctor_id=r.doctor_id,
        patient_ref=r.patient_ref,
        status=None if r.include_cancelled else "booked",
        starts_from=None if r.include_past else now,
    )
    found = await service.list_appointments(ctx.pool, tenant, query, limit=r.limit)
    return api.FindAppointmentsReply(appointments=[_appointment(a) for a in found])


Operation = Callable[[Context, str, Any, datetime], Awaitable[msgspec.Struct]]

# The routing table: operation name (shared.scheduling_api) -> handler.
HANDLERS: dict[str, Operation] = {
    api.SearchDoctorsRequest.OPERATION: search_doctors,
    api.NextSlotsRequest.OPERATION: next_slots,
    api.BookRequest.OPERATION: book,
    api.RescheduleRequest.OPERATION: reschedule,
    api.CancelRequest.OPERATION: cancel,
    api.FindAppointmentsRequest.OPERATION: find_appointments,
}
assert set(HANDLERS) == set(api.OPERATIONS), "every operation of the contract needs a handler"


async def answer(ctx: Context, operation: str, message: Msg) -> bytes:
    """The reply to one request (always an encoded ``Reply``)."""
    try:
        request = msgspec.json.decode(message.data, type=api.OPERATIONS[operation])
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        return api.encode_error("invalid_request", str(error))
    # The tenant is the dispatch's, never the request's word (services/scheduling/dispatches.py).
    tenant = await dispatches.live_tenant(ctx.pool, request.dispatch_id)
    if tenant is None:
        return api.encode_error("dispatch_not_live", "not a live dispatch")
    with _tracer.start_as_current_span(
        f"scheduling {operation}",
        context=extract(message.headers),
        kind=SpanKind.SERVER,
        attributes={
            attr.MESSAGING_SYSTEM: "nats",
            attr.MESSAGING_OPERATION: "process",
            attr.MESSAGING_DESTINATION: message.subject,
            attr.TENANT: tenant,
        },
    ):
        try:
            result = await HANDLERS[operation](ctx, tenant, request, datetime.now(UTC))
        except core.SchedulingError as error:
            return api.encode_error(error.code, str(error))  # type: ignore[arg-type]
        except Exception:  # the caller gets "unavailable", our log the traceback
            log.exception("scheduling request %s failed", operation)
            return api.encode_error("unavailable", "scheduling failed; try again shortly")
    return api.encode_result(result)


async def serve_requests(app: Litestar) -> None:
    """Answer scheduling requests on core NATS until cancelled."""
    nc, ctx = app.state.bus.nc, Context(app.state.pool, app.state.bus.phi)

    async def respond(operation: str, message: Msg) -> bytes:
        return await answer(ctx, operation, message)

    await serve(nc, scheduling_request_subject, HANDLERS, respond, QUEUE)
