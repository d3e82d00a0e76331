"""Anamnesis records: validated as FHIR on the way in, stored per consultation, read by the
doctor by consultation (the dispatch, or the appointment it came from), never by room: a room
name is reused, and the newest record of a room can be another patient's.

The record is the clinical record the clinic must keep: its answers and summary are stored
sealed with the patient's clinical-record key (``shared.phi``; the tenant's key when the record
names no patient), and opened only to answer. A record whose key was destroyed (its retention
ended) is gone: 410 ``anamnesis_erased``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
import pydantic
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from litestar import Litestar, get

from services.scheduling import store
from shared.access import Reader
from shared.bus import Bus
from shared.consumer import Consumer, ConsumerSpec, Delivery, data_of
from shared.contract import errors
from shared.db import projection
from shared.events import Envelope
from shared.events.clinical import AnamnesisRecorded, TranscriptRef
from shared.failures import PoisonMessageError
from shared.http import ApiError, NotFoundError
from shared.naming import is_patient_ref, is_room_name
from shared.phi import CLINICAL, Phi, is_erased, patient_of
from shared.tenants import Tenant
from shared.viewtokens import view_scope

log = logging.getLogger(__name__)

# FHIR's QuestionnaireResponse.status value set (fhir.resources checks the shape, not codes).
_STATUSES = {"in-progress", "completed", "amended", "entered-in-error", "stopped"}


class InvalidRecordError(ValueError):
    """The record can never be stored: not a FHIR QuestionnaireResponse, a bad room name or
    patient reference, or an appointment without its patient."""


def validate_record(record: AnamnesisRecorded) -> None:
    """Check a record against FHIR R4 (fhir.resources' R4B models; QuestionnaireResponse is the
    same in R4 and R4B). Raises InvalidRecordError saying what is wrong, never what it says."""
    if not is_room_name(record.room):
        raise InvalidRecordError("room is not a room name")
    if record.patient_ref and not is_patient_ref(record.patient_ref):
        raise InvalidRecordError("patient_ref is not a patient reference")
    if record.appointment_id and not record.patient_ref:
        raise InvalidRecordError("appointment_id needs the appointment's patient_ref")
    try:
        response = QuestionnaireResponse.model_validate(record.questionnaire_response)
    except pydantic.ValidationError as error:
        # Only the locations of the problems: the values are clinical data.
        where = ", ".join(".".join(str(p) for p in e["loc"]) for e in error.errors()[:5])
        raise InvalidRecordError(f"not a valid FHIR QuestionnaireResponse (at {where})") from None
    if response.status not in _STATUSES:
        raise InvalidRecordError("QuestionnaireResponse.status is not a FHIR status code")
    link_ids = _link_ids(record.questionnaire_response.get("item") or [])
    unknown = [ref.link_id for ref in record.transcript_refs if ref.link_id not in link_ids]
    if unknown:
        raise InvalidRecordError(
            f"transcript_refs name {len(unknown)} linkId(s) that are not in the response"
        )


def _link_ids(items: list[dict[str, Any]]) -> set[str]:
    found: set[str] = set()
    for item in items:
        found.add(str(item.get("linkId")))
        found |= _link_ids(item.get("item") or [])
        for answer in item.get("answer") or []:
            found |= _link_ids(answer.get("item") or [])
    return found


@dataclass(frozen=True)
class Records:
    """What the consumer needs: the database, and the sealing of clinical columns."""

    pool: asyncpg.Pool
    phi: Phi


async def store_record(records: Records, event: Envelope, delivery: Delivery) -> None:
    """The consumer's handler: validate (poison if invalid), then store once, sealed."""
    record = data_of(event, AnamnesisRecorded)
    if is_erased(record.questionnaire_response) or is_erased(record.summary_pt_br):
        log.info("an anamnesis whose key was destroyed was not stored")
        return
    try:
        validate_record(record)
    except InvalidRecordError as error:
        raise PoisonMessageError(str(error)) from None
    sealing = {"tenant": event.tenant, "patient_ref": patient_of(record), "kind": CLINICAL}
    response = await records.phi.seal_document(
        record.questionnaire_response, path="questionnaire_response", **sealing
    )
    summary = await records.phi.seal_text(record.summary_pt_br, path="summary_pt_br", **sealing)
    async with projection(records.pool, delivery, event.id) as conn:
        if conn is None:
            return
        await store.insert_anamnesis(
            conn,
            tenant_id=event.tenant,
            event_id=event.id,
            recorded_at=event.time,
            room=record.room,
            dispatch_id=record.dispatch_id,
            patient_ref=record.patient_ref,
            appointment_id=record.appointment_id,
            record={
                "questionnaire_response": response,
                "summary_pt_br": summary,
                "transcript_refs": msgspec.to_builtins(record.transcript_refs),
            },
        )


ANAMNESIS_CONSUMER: ConsumerSpec[Records] = ConsumerSpec(
    durable="scheduling-anamnesis",
    handlers={AnamnesisRecorded: store_record},
    opens=True,
    # Storing a record takes milliseconds: a short ack wait brings back sooner the message a
    # killed scheduling process held (the doctor waits for the anamnesis), as billing's does.
    ack_wait=10.0,
)


async def run_anamnesis_consumer(app: Litestar) -> None:
    records = Records(app.state.pool, app.state.bus.phi)
    await Consumer(app.state.bus, ANAMNESIS_CONSUMER, records).run()


_NOT_FOUND = errors(
    {
        404: {"anamnesis_not_found": "no anamnesis has been recorded in this consultation"},
        410: {"anamnesis_erased": "the anamnesis was erased: its patient's key was destroyed"},
    }
)


class TranscriptRefBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    link_id: str
    segment_ids: list[str]


class AnamnesisBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    # The consultation: the dispatch that made the record, and its appointment ("" if none).
    dispatch_id: str
    appointment_id: str
    # The patient, by the clinic's pseudonymous reference ("" if the dispatch named none).
    patient_ref: str
    # Where it happened (a room name is reused: never how a record is found).
    room: str
    recorded_at: datetime
    # The FHIR R4 QuestionnaireResponse, as the agent recorded it.
    questionnaire_response: dict[str, Any]
    summary_pt_br: str
    # Which transcript segments each answer (by linkId) came from.
    transcript_refs: list[TranscriptRefBody]

    @classmethod
    def of(cls, row: Mapping[str, Any] | None) -> AnamnesisBody:
        if row is None:
            raise NotFoundError(
                "no anamnesis has been recorded in this consultation", code="anamnesis_not_found"
            )
        return cls(
            dispatch_id=row["dispatch_id"],
            appointment_id=row["appointment_id"],
            patient_ref=row["patient_ref"],
            room=row["room"],
            recorded_at=row["recorded_at"],
            questionnaire_response=row["questionnaire_response"],
            summary_pt_br=row["summary_pt_br"],
            transcript_refs=[
                TranscriptRefBody(link_id=ref.link_id, segment_ids=ref.segment_ids)
                for ref in msgspec.convert(row["transcript_refs"], list[TranscriptRef])
            ],
        )


async def _opened(bus: Bus, tenant: str, row: asyncpg.Record | None) -> AnamnesisBody:
    """The answer for a stored record (404 if none), its sealed columns opened (410 if its key
    was destroyed)."""
    if row is None:
        return AnamnesisBody.of(None)
    opened = dict(row)
    opened["questionnaire_response"] = await bus.phi.open_document(
        row["questionnaire_response"], tenant=tenant, path="questionnaire_response"
    )
    opened["summary_pt_br"] = await bus.phi.open_text(
        row["summary_pt_br"], tenant=tenant, path="summary_pt_br"
    )
    if is_erased(opened["questionnaire_response"]) or is_erased(opened["summary_pt_br"]):
        raise ApiError(
            "this anamnesis was erased: its key was destroyed",
            code="anamnesis_erased",
            status_code=410,
        )
    return AnamnesisBody.of(opened)


async def _read(bus: Bus, reader: Reader, tenant: str, row: asyncpg.Record | None) -> AnamnesisBody:
    """The record opened, its read recorded in the access log before it is answered."""
    body = await _opened(bus, tenant, row)
    await reader.record(
        bus,
        tenant,
        patient_ref=body.patient_ref,
        resource="anamnesis",
        resource_id=body.dispatch_id,
    )
    return body


@get(
    "/v1/consultations/{dispatch_id:str}/anamnesis",
    operation_id="getConsultationAnamnesis",
    summary="The latest anamnesis record of a consultation (its intake agent's dispatch)",
    responses=_NOT_FOUND,
    # A doctor's view token reads its own consultation's record, and no other.
    opt=view_scope("anamnesis:read", personal=True, dispatch_id="dispatch"),
)
async def get_consultation_anamnesis(
    dispatch_id: str, tenant: Tenant, pool: asyncpg.Pool, bus: Bus, reader: Reader
) -> AnamnesisBody:
    """The newest record made by the intake agent of this dispatch (the ``id`` that
    ``POST /v1/agents`` answered); 404 ``anamnesis_not_found``, 410 ``anamnesis_erased``. A
    room name is not a consultation: rooms are reused, so this path never looks one up."""
    async with pool.acquire() as conn:
        row = await store.dispatch_anamnesis(conn, tenant.id, dispatch_id)
    return await _read(bus, reader, tenant.id, row)


@get(
    "/v1/appointments/{appointment_id:str}/anamnesis",
    operation_id="getAppointmentAnamnesis",
    summary="The latest anamnesis record made for an appointment",
    responses=_NOT_FOUND,
)
async def get_appointment_anamnesis(
    appointment_id: str, tenant: Tenant, pool: asyncpg.Pool, bus: Bus, reader: Reader
) -> AnamnesisBody:
    """The newest record of the dispatches made for this appointment (``appointmentId`` on
    ``POST /v1/agents``) about the appointment's own patient; 404 ``anamnesis_not_found``, 410
    ``anamnesis_erased``."""
    async with pool.acquire() as conn:
        row = await store.appointment_anamnesis(conn, tenant.id, appointment_id)
    return await _read(bus, reader, tenant.id, row)


ANAMNESIS_ROUTES = [get_consultation_anamnesis, get_appointment_anamnesis]
