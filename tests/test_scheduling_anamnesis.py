"""Anamnesis records: the intake questionnaire, FHIR validation, storage from the PHI stream, and
reading them by consultation: ``GET /v1/consultations/{dispatchId}/anamnesis`` and
``GET /v1/appointments/{appointmentId}/anamnesis``."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fhir.resources.R4B.questionnaire import Questionnaire

from deploy.stack import StackState
from services.scheduling.anamnesis import (
    InvalidRecordError,
    Records,
    store_record,
    validate_record,
)
from shared.bus import Bus
from shared.consumer import Delivery
from shared.events import DeadLettered, envelope
from shared.events.clinical import AnamnesisRecorded, TranscriptRef
from shared.tenants import authenticate
from tests.support import eventually, watch

QUESTIONNAIRE = (
    Path(__file__).resolve().parent.parent
    / "services"
    / "agent"
    / "roles"
    / "intake"
    / "questionnaire.json"
)


DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def tag() -> str:
    return uuid.uuid4().hex[:8]


def link_ids(items: list[dict[str, Any]]) -> list[str]:
    found: list[str] = []
    for item in items:
        found.append(item["linkId"])
        found += link_ids(item.get("item", []))
    return found


def response(chief_complaint: str = "Dor de cabeça há três dias") -> dict[str, Any]:
    """A QuestionnaireResponse to the intake questionnaire, as the intake agent would record it."""
    return {
        "resourceType": "QuestionnaireResponse",
        "language": "pt-BR",
        "questionnaire": "urn:mediai:fhir:Questionnaire:anamnesis-intake",
        "status": "completed",
        "authored": "2026-01-15T12:30:00-03:00",
        "item": [
            {
                "linkId": "queixa-principal",
                "item": [
                    {
                        "linkId": "queixa-principal.descricao",
                        "answer": [{"valueString": chief_complaint}],
                    },
                ],
            },
            {
                "linkId": "hda",
                "item": [
                    {"linkId": "hda.inicio", "answer": [{"valueString": "de repente, na segunda"}]},
                    {"linkId": "hda.intensidade", "answer": [{"valueInteger": 6}]},
                ],
            },
            {
                "linkId": "alergias",
                "item": [
                    {"linkId": "alergias.possui", "answer": [{"valueBoolean": True}]},
                    {
                        "linkId": "alergias.lista",
                        "answer": [{"valueString": "dipirona: urticária"}],
                    },
                ],
            },
            {
                "linkId": "historia-social",
                "item": [
                    {
                        "linkId": "historia-social.tabagismo",
                        "answer": [
                            {
                                "valueCoding": {
                                    "system": "urn:mediai:fhir:CodeSystem:anamnesis",
                                    "code": "tabagismo-nunca",
                                    "display": "Nunca fumou",
                                }
                            }
                        ],
                    },
                ],
            },
        ],
    }


def record(room: str, **overrides: Any) -> AnamnesisRecorded:
    values: dict[str, Any] = {
        "dispatch_id": f"dispatch-{tag()}",
        "room": room,
        "questionnaire_response": response(),
        "summary_pt_br": "Cefaleia súbita há 3 dias, intensidade 6/10; alergia a dipirona.",
        "transcript_refs": [
            TranscriptRef(link_id="queixa-principal.descricao", segment_ids=["seg-1"]),
            TranscriptRef(link_id="hda.intensidade", segment_ids=["seg-4", "seg-5"]),
        ],
    }
    values.update(overrides)
    return AnamnesisRecorded(**values)


def test_the_intake_questionnaire_is_valid_fhir_in_pt_br() -> None:
    document = json.loads(QUESTIONNAIRE.read_text(encoding="utf-8"))
    questionnaire = Questionnaire.model_validate(document)
    assert questionnaire.status == "active"
    assert document["language"] == "pt-BR"
    ids = link_ids(document["item"])
    assert len(ids) == len(set(ids)), "linkIds must be unique"
    sections = {item["linkId"]: item for item in document["item"]}
    assert {
        "identificacao",
        "queixa-principal",
        "hda",
        "antecedentes",
        "medicamentos",
        "alergias",
        "historia-familiar",
        "historia-social",
        "revisao-sistemas",
    } <= set(sections)
    assert {
        "hda.inicio",
        "hda.duracao",
        "hda.intensidade",
        "hda.fatores-piora",
        "hda.fatores-melhora",
    } <= set(link_ids(sections["hda"]["item"]))
    assert sections["queixa-principal"]["required"] is True
    for item in (i for s in document["item"] for i in s.get("item", [])):
        for condition in item.get("enableWhen", []):
            assert condition["question"] in ids, item["linkId"]


def test_every_answer_of_a_response_uses_a_questionnaire_link_id() -> None:
    known = set(link_ids(json.loads(QUESTIONNAIRE.read_text(encoding="utf-8"))["item"]))
    assert set(link_ids(response()["item"])) <= known
    validate_record(record("consulta-1"))  # valid FHIR R4 QuestionnaireResponse


def broken(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    document = copy.deepcopy(response())
    change(document)
    return document


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"questionnaire_response": broken(lambda d: d.pop("status"))}, "status"),
        ({"questionnaire_response": broken(lambda d: d.update(status="done"))}, "status code"),
        ({"questionnaire_response": broken(lambda d: d.update(resourceType="Patient"))}, "valid"),
        ({"questionnaire_response": broken(lambda d: d.update(diagnosis="x"))}, "diagnosis"),
        ({"questionnaire_response": broken(lambda d: d["item"][0].pop("linkId"))}, "linkId"),
        ({"transcript_refs": [TranscriptRef(link_id="invented", segment_ids=["s"])]}, "linkId"),
        ({"room": "not a room"}, "room"),
        ({"patient_ref": "Maria da Silva"}, "patient_ref"),
        ({"patient_ref": "pac-1\n"}, "patient_ref"),
        ({"appointment_id": "appointment-1"}, "appointment_id needs"),
    ],
)
def test_records_that_are_not_valid_fhir_are_refused(
    overrides: dict[str, Any], problem: str
) -> None:
    with pytest.raises(InvalidRecordError, match=problem) as error:
        validate_record(record(**{"room": "consulta-1", **overrides}))
    assert "Dor de cabeça" not in str(error.value)  # reasons never carry clinical content


@pytest.fixture
async def tenant_id(pool: asyncpg.Pool, tenant_key: str) -> str:
    tenant = await authenticate(pool, tenant_key)
    assert tenant is not None
    return tenant.id


async def test_a_recorded_anamnesis_is_served_for_its_consultation_only(
    bus: Bus, api: httpx.AsyncClient, stack: StackState, other_tenant_key: str, tenant_id: str
) -> None:
    room = f"consulta-{tag()}"
    first = record(room, patient_ref=f"pac-{tag()}")
    url = f"/v1/consultations/{first.dispatch_id}/anamnesis"
    missing = await api.get(url)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "anamnesis_not_found"

    await bus.publish(first, tenant=tenant_id, key=first.dispatch_id)

    async def stored(summary: str, path: str = url) -> bool:
        answer = await api.get(path)
        return answer.status_code == 200 and answer.json()["summaryPtBr"] == summary

    await eventually(lambda: stored(first.summary_pt_br))
    body = (await api.get(url)).json()
    assert (body["room"], body["dispatchId"]) == (room, first.dispatch_id)
    assert (body["patientRef"], body["appointmentId"]) == (first.patient_ref, "")
    assert body["questionnaireResponse"] == first.questionnaire_response
    assert body["transcriptRefs"] == [
        {"linkId": "queixa-principal.descricao", "segmentIds": ["seg-1"]},
        {"linkId": "hda.intensidade", "segmentIds": ["seg-4", "seg-5"]},
    ]

    amended = record(
        room,
        dispatch_id=first.dispatch_id,
        patient_ref=first.patient_ref,
        summary_pt_br="Resumo revisado.",
        questionnaire_response={**response(), "status": "amended"},
    )
    await bus.publish(amended, tenant=tenant_id, key=first.dispatch_id)
    await eventually(lambda: stored("Resumo revisado."))  # the consultation's newest record wins

    # The next patient in the same room: a newer record of the room, never the first's answer.
    other = record(room, patient_ref=f"pac-{tag()}", summary_pt_br="Outro paciente.")
    await bus.publish(other, tenant=tenant_id, key=other.dispatch_id)
    await eventually(
        lambda: stored("Outro paciente.", f"/v1/consultations/{other.dispatch_id}/anamnesis")
    )
    assert (await api.get(url)).json()["summaryPtBr"] == "Resumo revisado."

    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {other_tenant_key}"}
    ) as elsewhere:
        assert (await elsewhere.get(url)).status_code == 404
    assert (await api.get(f"/v1/consultations/{room}/anamnesis")).status_code == 404
    assert (await api.get("/v1/consultations/no-such-dispatch/anamnesis")).status_code == 404


async def test_by_appointment_only_records_about_the_appointments_patient_are_served(
    bus: Bus, api: httpx.AsyncClient, stack: StackState, other_tenant_key: str, tenant_id: str
) -> None:
    doctor = await api.post(
        "/v1/doctors",
        json={
            "name": f"Dr. Caio Lima {tag()}",
            "specialty": "Clínica geral",
            "city": "Recife",
            "schedule": {"weekly": [{"day": d, "start": "00:00", "end": "23:30"} for d in DAYS]},
        },
    )
    assert doctor.status_code == 201, doctor.text
    slot = (await api.get(f"/v1/doctors/{doctor.json()['id']}/slots")).json()["slots"][0]
    patient = f"pac-{tag()}"
    booked = await api.post(
        "/v1/appointments",
        json={"doctorId": doctor.json()["id"], "startsAt": slot["startsAt"], "patientRef": patient},
    )
    assert booked.status_code == 201, booked.text
    appointment = booked.json()["id"]
    url = f"/v1/appointments/{appointment}/anamnesis"

    # A dispatch that named this appointment but another patient: its own record, not this
    # appointment's.
    stray = record(f"consulta-{tag()}", patient_ref=f"pac-{tag()}", appointment_id=appointment)
    await bus.publish(stray, tenant=tenant_id, key=stray.dispatch_id)
    stray_url = f"/v1/consultations/{stray.dispatch_id}/anamnesis"
    await eventually(lambda: _ok(api, stray_url))
    assert (await api.get(url)).status_code == 404

    mine = record(f"consulta-{tag()}", patient_ref=patient, appointment_id=appointment)
    await bus.publish(mine, tenant=tenant_id, key=mine.dispatch_id)
    body = await eventually(lambda: _ok(api, url))
    assert (body["dispatchId"], body["patientRef"], body["appointmentId"]) == (
        mine.dispatch_id,
        patient,
        appointment,
    )
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {other_tenant_key}"}
    ) as elsewhere:
        assert (await elsewhere.get(url)).status_code == 404


async def _ok(api: httpx.AsyncClient, path: str) -> dict[str, Any] | None:
    answer = await api.get(path)
    return dict(answer.json()) if answer.status_code == 200 else None


async def test_an_invalid_record_is_dead_lettered_and_never_served(
    bus: Bus, api: httpx.AsyncClient, tenant_id: str
) -> None:
    room = f"consulta-{tag()}"
    invalid = record(
        room,
        questionnaire_response={
            "resourceType": "QuestionnaireResponse",
            "item": [{"text": "Dor de cabeça"}],
        },
    )
    async with watch(bus, DeadLettered) as letters:
        published = await bus.publish(invalid, tenant=tenant_id, key=room)
        letter = await letters.wait_for(
            lambda e: isinstance(e.data, DeadLettered) and e.data.original_event_id == published.id
        )
    assert isinstance(letter.data, DeadLettered)
    assert letter.data.consumer == "scheduling-anamnesis"
    assert letter.data.reason.startswith("poison: not a valid FHIR QuestionnaireResponse")
    assert "Dor de cabeça" not in letter.data.reason
    served = await api.get(f"/v1/consultations/{invalid.dispatch_id}/anamnesis")
    assert served.status_code == 404


async def test_a_redelivered_record_is_stored_once(
    pool: asyncpg.Pool, bus: Bus, tenant_id: str
) -> None:
    room = f"consulta-{tag()}"
    event = envelope(record(room), source="mediai/agent", tenant=tenant_id, subject=room)
    consumer = f"test-anamnesis-{tag()}"
    for attempt in (1, 2):
        await store_record(
            Records(pool, bus.phi),
            event,
            Delivery(consumer=consumer, stream_sequence=7, deliveries=attempt),
        )
    rows = await pool.fetchval("SELECT count(*) FROM anamnesis_records WHERE room = $1", room)
    assert rows == 1
