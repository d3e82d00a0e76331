"""Anamnesis records: validated as FHIR on the way in, stored per room, read by the doctor."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

import asyncpg
import msgspec
import pydantic
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from litestar import Litestar, get
from litestar.params import Parameter

from services.scheduling import store
from shared.consumer import Consumer, ConsumerSpec, Delivery, data_of
from shared.db import projection
from shared.events import Envelope
from shared.events.clinical import AnamnesisRecorded, TranscriptRef
from shared.failures import PoisonMessageError
from shared.http import NotFoundError
from shared.naming import ROOM_NAME, ROOM_NAME_RULE, is_room_name
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


async def store_record(pool: asyncpg.Pool, event: Envelope, delivery: Delivery) -> None:
    """The consumer's handler: validate (poison if invalid), then store once."""
    record = data_of(event, AnamnesisRecorded)
    try:
        validate_record(record)
    except InvalidRecordError as error:
        raise PoisonMessageError(str(error)) from None
    async with projection(pool, delivery, event.id) as conn:
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
                "questionnaire_response": record.questionnaire_response,
                "summary_pt_br": record.summary_pt_br,
                "transcript_refs": msgspec.to_builtins(record.transcript_refs),
            },
        )


ANAMNESIS_CONSUMER: ConsumerSpec[asyncpg.Pool] = ConsumerSpec(
    durable="scheduling-anamnesis", handlers={AnamnesisRecorded: store_record}
)


async def run_anamnesis_consumer(app: Litestar) -> None:
    await Consumer(app.state.bus, ANAMNESIS_CONSUMER, app.state.pool).run()


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
) -> AnamnesisBody:
    """The newest record the intake agent made in this room; 404 ``anamnesis_not_found``
    (400 ``invalid_request`` for a name that can be no room's)."""
    async with pool.acquire() as conn:
        row = await store.latest_anamnesis(conn, tenant.id, room)
    if row is None:
        raise NotFoundError(
            "no anamnesis has been recorded in this room", code="anamnesis_not_found"
        )
    return AnamnesisBody(
        room=row["room"],
        dispatch_id=row["dispatch_id"],
        recorded_at=row["recorded_at"],
        questionnaire_response=row["questionnaire_response"],
        summary_pt_br=row["summary_pt_br"],
        transcript_refs=[
            TranscriptRefBody(link_id=ref.link_id, segment_ids=ref.segment_ids)
            for ref in msgspec.convert(row["transcript_refs"], list[TranscriptRef])
        ],
    )
