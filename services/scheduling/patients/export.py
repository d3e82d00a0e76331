"""The export of what MediAI holds about a patient (LGPD Art. 18 II): scheduling's rows, and the
events about the patient read back from the log where the index says they are, all opened with
the patient's keys, as one FHIR Bundle (``fhir``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import asyncpg
import nats.js.errors

from services.scheduling import privacy
from services.scheduling import store as scheduling_store
from services.scheduling.patients import core, fhir, store
from shared.bus import Bus
from shared.events import CODEC, Envelope, EventDecodeError
from shared.phi import is_erased

log = logging.getLogger(__name__)

# Every appointment of a patient, however many (a patient has dozens, not thousands).
_APPOINTMENTS = 10_000


async def _events(bus: Bus, pool: asyncpg.Pool, tenant: str, patient_ref: str) -> list[Envelope]:
    found = []
    for row in await store.patient_events(pool, tenant, patient_ref):
        try:
            message = await bus.js.get_msg(row["stream"], row["stream_sequence"])
        except nats.js.errors.NotFoundError:
            continue  # aged out of the PHI stream (its retention), or removed
        try:
            event = CODEC.decode(message.data or b"")
        except EventDecodeError:
            log.warning(
                "export: an undecodable message at %s/%d", row["stream"], row["stream_sequence"]
            )
            continue
        if event.tenant == tenant:
            found.append(await bus.phi.open(event))
    return found


async def _anamneses(
    bus: Bus, pool: asyncpg.Pool, tenant: str, patient_ref: str
) -> list[dict[str, Any]]:
    opened = []
    for row in await store.patient_anamneses(pool, tenant, patient_ref):
        record = dict(row)
        record["questionnaire_response"] = await bus.phi.open_document(
            row["questionnaire_response"], tenant=tenant, path="questionnaire_response"
        )
        record["summary_pt_br"] = await bus.phi.open_text(
            row["summary_pt_br"], tenant=tenant, path="summary_pt_br"
        )
        if not is_erased(record["questionnaire_response"]):
            opened.append(record)
    return opened


async def export(
    bus: Bus, pool: asyncpg.Pool, tenant: str, patient_ref: str, *, clinical_retention_days: int
) -> dict[str, Any]:
    """The Bundle of everything MediAI holds about the patient, now."""
    query = scheduling_store.AppointmentFilter(patient_ref=patient_ref)
    async with pool.acquire() as conn:
        rows = await scheduling_store.find_appointments(conn, tenant, query, limit=_APPOINTMENTS)
    appointments = [await privacy.opened(bus.phi, tenant, a) for a in rows]
    certificates = []
    for erasure in await store.erasures_of(pool, tenant, patient_ref):
        reports = await store.reports(pool, erasure.erasure_id)
        made = core.certificate(erasure, reports, clinical_retention_days=clinical_retention_days)
        certificates.append((made, erasure.requested_at))
    # NATS being away raises its own errors: a 503 to the caller (shared.failures).
    events = await _events(bus, pool, tenant, patient_ref)
    return fhir.bundle(
        tenant=tenant,
        patient_ref=patient_ref,
        now=datetime.now(UTC),
        appointments=appointments,
        anamneses=await _anamneses(bus, pool, tenant, patient_ref),
        events=events,
        accesses=await store.entries(pool, tenant, patient_ref=patient_ref),
        certificates=certificates,
    )
