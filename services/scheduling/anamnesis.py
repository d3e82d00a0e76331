"""Anamnesis records: validated as FHIR on the way in, stored per room, read by the doctor.

The record is the clinical record the clinic must keep: its answers and summary are stored
sealed with the patient's clinical-record key (``shared.phi``; the tenant's key while the
record names no patient), and opened only to answer the doctor. A record whose key was
destroyed (its retention ended) is gone: 410 ``anamnesis_erased``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import asyncpg
import msgspec
import pydantic
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from litestar import Litestar, get
from litestar.params import Parameter

from services.scheduling import store
from shared.bus import Bus
from shared.consumer import Consumer, ConsumerSpec, Delivery, data_of
from shared.db import projection
from shared.events import Envelope
from shared.events.clinical import AnamnesisRecorded, TranscriptRef
from shared.failures import PoisonMessageError
from shared.http import ApiError, NotFoundError
from shared.naming import ROOM_NAME, ROOM_NAME_RULE, is_room_name
from shared.phi import CLINICAL, Phi, is_erased, patient_of
from shared.tenants import Tenant

log = logging.getLogger(__name__)

# FHIR's QuestionnaireResponse.status value set (fhir.resources checks the shape, not codes).
_STATUSES = {"in-progress", "completed", "amended", "entered-in-error", "stopped"}


class InvalidRecordError(ValueError):
    """The record can never be stored: not a FHIR QuestionnaireResponse, or a bad room name."""


def validate_record(record: AnamnesisRecorded) -> None:
    """Check a record against FHIR R4 (fhir.resources' R4B models; QuestionnaireResponse is the
    same in R4 and R4B). Raises InvalidRecordError saying what is wrong, never what it says."""
    if not is_room_name(record.room):
        raise InvalidRecordError("room is not a room name")
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
            record={
                "questionnaire_response": response,
                "summary_pt_br": summary,
                "transcript_refs": msgspec.to_builtins(record.transcript_refs),
            },
        )


ANAMNESIS_CONSUMER: ConsumerSpec[Records] = ConsumerSpec(
    durable="scheduling-anamnesis", handlers={AnamnesisRecorded: store_record}, opens=True
)


async def run_anamnesis_consumer(app: Litestar) -> None:
    records = Records(app.state.pool, app.state.bus.phi)
    await Consumer(app.state.bus, ANAMNESIS_CONSUMER, records).run()


class TranscriptRefBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    link_id: str
    segment_ids: list[str]


class AnamnesisBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    room: str
    dispatch_id: str
    recorded_at: datetime
    # The FHIR R4 QuestionnaireResponse, as the agent recorded it.
    questionnaire_response: dict[str, Any]
    summary_pt_br: str
    # Which transcript segments each answer (by linkId) came from.
    transcript_refs: list[TranscriptRefBody]


@get(
    "/v1/consultations/{room:str}/anamnesis",
    operation_id="getAnamnesis",
    summary="The latest anamnesis record of a consultation room",
)
async def get_anamnesis(
    room: Annotated[str, Parameter(pattern=ROOM_NAME.pattern, description=ROOM_NAME_RULE)],
    tenant: Tenant,
    pool: asyncpg.Pool,
    bus: Bus,
) -> AnamnesisBody:
    """The newest record the intake agent made in this room; 404 ``anamnesis_not_found``
    (400 ``invalid_request`` for a name that can be no room's), 410 ``anamnesis_erased`` when
    its key was destroyed."""
    async with pool.acquire() as conn:
        row = await store.latest_anamnesis(conn, tenant.id, room)
    if row is None:
        raise NotFoundError(
            "no anamnesis has been recorded in this room", code="anamnesis_not_found"
        )
    response = await bus.phi.open_document(
        row["questionnaire_response"], tenant=tenant.id, path="questionnaire_response"
    )
    summary = await bus.phi.open_text(row["summary_pt_br"], tenant=tenant.id, path="summary_pt_br")
    if is_erased(response) or is_erased(summary):
        raise ApiError(
            "this anamnesis was erased: its key was destroyed",
            code="anamnesis_erased",
            status_code=410,
        )
    return AnamnesisBody(
        room=row["room"],
        dispatch_id=row["dispatch_id"],
        recorded_at=row["recorded_at"],
        questionnaire_response=response,
        summary_pt_br=summary,
        transcript_refs=[
            TranscriptRefBody(link_id=ref.link_id, segment_ids=ref.segment_ids)
            for ref in msgspec.convert(row["transcript_refs"], list[TranscriptRef])
        ],
    )
