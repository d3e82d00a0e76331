"""The patients' rights over HTTP: erase a patient (and its certificate), export what MediAI holds
about them, and the access log with its verification."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import asyncpg
import msgspec
from litestar import Response, get, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import HeaderParameter, Parameter

from services.scheduling.patients import core, store
from services.scheduling.patients.erasure import Eraser
from services.scheduling.patients.export import export
from services.scheduling.patients.verify import Verification, verify_tenant
from shared.access import PURPOSE, PURPOSE_HEADER, PURPOSE_RULE, Entry, Reader
from shared.bus import Bus
from shared.config import Settings
from shared.contract import Cursor, PatientRefPath, errors
from shared.http import ApiError, NotFoundError
from shared.naming import PATIENT_REF, PATIENT_REF_RULE, is_patient_ref
from shared.tenants import Tenant

Purpose = Annotated[
    str | None,
    HeaderParameter(
        name=PURPOSE_HEADER,
        required=False,
        description=f"Why the data is read: {PURPOSE_RULE}",
        schema_extra={"pattern": PURPOSE.pattern},
    ),
]


_INVALID = {"invalid_request": f"`patientRef` must be {PATIENT_REF_RULE}"}


def _patient(patient_ref: str) -> str:
    if not is_patient_ref(patient_ref):
        raise ApiError(
            f"patientRef must be {PATIENT_REF_RULE}",
            code="invalid_request",
            details=[{"field": "patientRef", "problem": f"must be {PATIENT_REF_RULE}"}],
        )
    return patient_ref


def _days(settings: Settings) -> int:
    return settings.clinical_retention // 86400


async def _certificate(
    pool: asyncpg.Pool, settings: Settings, erasure: core.Erasure
) -> core.Certificate:
    reports = await store.reports(pool, erasure.erasure_id)
    return core.certificate(erasure, reports, clinical_retention_days=_days(settings))


@post(
    "/v1/patients/{patient_ref:str}/erasure",
    operation_id="erasePatient",
    summary="Erase a patient's personal data (LGPD Art. 18 VI), answering its certificate",
    status_code=200,
    responses={
        202: ResponseSpec(
            core.Certificate,
            description="The erasure is under way: some services are still emptying their "
            "rows (`pending`); GET the certificate later",
        ),
        **errors({400: _INVALID}),
    },
)
async def erase_patient(
    patient_ref: PatientRefPath,
    tenant: Tenant,
    pool: asyncpg.Pool,
    bus: Bus,
    settings: Settings,
    reader: Reader,
    purpose: Purpose = None,
) -> Response[core.Certificate]:
    """Destroys the patient's personal-data key (every sealed copy of their personal data becomes
    unreadable at once), empties their rows everywhere, and answers the certificate: what was
    erased, what is kept and on which legal basis (the clinical record, by law), and when. 200
    once every service has erased its rows, 202 while some still are (``pending``; GET it
    later). Idempotent: asking again answers the same certificate, unless data about the
    patient arrived since (then that is erased too, with a new certificate)."""
    eraser = Eraser(pool, bus.nc, bus.phi.keys)
    erasure = await eraser.request(
        tenant.id, _patient(patient_ref), by=reader.reader, purpose=reader.purpose
    )
    made = await _certificate(pool, settings, erasure)
    await reader.record(
        bus,
        tenant.id,
        patient_ref=patient_ref,
        resource="erasure_certificate",
        resource_id=erasure.erasure_id,
    )
    return Response(made, status_code=200 if made.status == "completed" else 202)


@get(
    "/v1/patients/{patient_ref:str}/erasure",
    operation_id="getErasureCertificate",
    summary="The certificate of a patient's latest erasure",
    responses=errors({400: _INVALID, 404: {"erasure_not_found": "this patient was never erased"}}),
)
async def get_erasure(
    patient_ref: PatientRefPath,
    tenant: Tenant,
    pool: asyncpg.Pool,
    bus: Bus,
    settings: Settings,
    reader: Reader,
    purpose: Purpose = None,
) -> core.Certificate:
    """404 ``erasure_not_found`` when the patient was never erased."""
    erasure = await store.latest_erasure(pool, tenant.id, _patient(patient_ref))
    if erasure is None:
        raise NotFoundError("this patient was never erased", code="erasure_not_found")
    made = await _certificate(pool, settings, erasure)
    await reader.record(
        bus,
        tenant.id,
        patient_ref=patient_ref,
        resource="erasure_certificate",
        resource_id=erasure.erasure_id,
    )
    return made


@get(
    "/v1/patients/{patient_ref:str}/data",
    operation_id="exportPatientData",
    summary="Everything MediAI holds about a patient (LGPD Art. 18 II), as a FHIR Bundle",
)
async def export_patient_data(
    patient_ref: PatientRefPath,
    tenant: Tenant,
    pool: asyncpg.Pool,
    bus: Bus,
    settings: Settings,
    reader: Reader,
    purpose: Purpose = None,
) -> dict[str, Any]:
    """A FHIR R4 ``collection`` Bundle, opened with the patient's keys: the patient's reference,
    names and contacts, appointments, anamnesis records (QuestionnaireResponse), consultations
    with agents (Encounter), transcripts, instructions, commands and hints (Communication), red
    flags (Flag), consent decisions (Consent), every read of their data (AuditEvent) and the
    erasure certificates (DocumentReference). Transcripts are held only as long as the PHI
    stream keeps them (``MEDIAI_PHI_RETENTION``); erased values read ``[apagado]``."""
    bundle = await export(
        bus, pool, tenant.id, _patient(patient_ref), clinical_retention_days=_days(settings)
    )
    await reader.record(bus, tenant.id, patient_ref=patient_ref, resource="patient_data")
    return bundle


class AccessEntry(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    position: int
    patient_ref: str
    resource: str
    resource_id: str
    reader: str
    purpose: str
    service: str
    read_at: datetime
    previous_hash: str
    hash: str

    @classmethod
    def of(cls, entry: Entry) -> AccessEntry:
        fields = msgspec.structs.asdict(entry)
        fields.pop("event_id")
        return cls(**fields)


class AccessLog(msgspec.Struct, frozen=True, kw_only=True):
    entries: list[AccessEntry]


@get("/v1/access-log", operation_id="listAccessLog", summary="Who read patients' personal data")
async def list_access_log(
    tenant: Tenant,
    pool: asyncpg.Pool,
    patient_ref: Annotated[
        str | None,
        Parameter(
            query="patientRef",
            required=False,
            description=PATIENT_REF_RULE,
            schema_extra={"pattern": PATIENT_REF.pattern},
        ),
    ] = None,
    after: Cursor = 0,
    limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
) -> AccessLog:
    """The tenant's access log (LGPD Art. 37), oldest first from ``after`` (a position): every
    read of a patient's personal data through the API, who read it (the API key's prefix) and
    what for (``X-Purpose``). Each entry holds the hash of the previous one of the tenant's
    chain (``previousHash``): ``GET /v1/access-log/verify`` checks it."""
    if patient_ref is not None:
        _patient(patient_ref)
    found = await store.entries(pool, tenant.id, patient_ref=patient_ref, after=after, limit=limit)
    return AccessLog(entries=[AccessEntry.of(entry) for entry in found])


@get(
    "/v1/access-log/verify",
    operation_id="verifyAccessLog",
    summary="Check that no entry of the access log was edited or removed",
)
async def verify_access_log(tenant: Tenant, pool: asyncpg.Pool, bus: Bus) -> Verification:
    """Walks the tenant's whole chain (each entry's hash, each link) and compares its length with
    the reads on the event log: ``intact`` is false, with the ``problems`` found, when an entry
    was edited or removed."""
    return await verify_tenant(pool, bus, tenant.id)


ROUTES = [erase_patient, get_erasure, export_patient_data, list_access_log, verify_access_log]
