"""Erasure and access (LGPD Art. 18): erasing a patient destroys their personal-data key, empties
their rows everywhere and answers a certificate; asking again answers the same one; a process
killed between the key's destruction and the rows is carried on; the export shows what MediAI
holds, as FHIR."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle
from livekit import api as lk

from deploy.stack import Stack
from services.scheduling.patients.core import (
    HOLDERS,
    Erasure,
    HolderReport,
    certificate,
    needs_new_erasure,
)
from shared.bus import Bus
from shared.config import Settings
from shared.crashpoints import CRASH_EXIT_CODE, VARIABLE
from shared.crypto import is_sealed
from shared.naming import livekit_room
from shared.tenants import authenticate
from tests.support import eventually
from tests.test_scheduling_anamnesis import record

pytestmark = pytest.mark.livekit

NAME, CONTACT, REASON = "Maria Erasmo da Silva", "+55 81 98888-1234", "enxaqueca forte"
ROOM_NOTE = "Consulta de retorno da Maria Erasmo"

# -- the certificate, pure --------------------------------------------------------------------

T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)


def erasure(**more: Any) -> Erasure:
    return Erasure(erasure_id="e1", tenant="t", patient_ref="pac-1", requested_at=T0, **more)


def test_an_erasure_is_complete_once_the_key_is_gone_and_every_holder_said_what_it_erased() -> None:
    started = certificate(erasure(), [], clinical_retention_days=7300)
    assert (started.status, started.erased, started.pending) == ("erasing", [], list(HOLDERS))
    destroyed = erasure(destroyed_keys=("kabc",), keys_destroyed_at=T0 + timedelta(seconds=1))
    own = HolderReport(
        holder="scheduling",
        erased={"appointments.patient_name": 2, "idempotency_keys": 1},
        erased_at=T0 + timedelta(seconds=2),
    )
    halfway = certificate(destroyed, [own], clinical_retention_days=7300)
    assert (halfway.status, halfway.pending, halfway.completed_at) == ("erasing", ["rooms"], None)
    assert "key kabc destroyed" in halfway.erased[0].how
    rooms = HolderReport(
        holder="rooms", erased={"room_participants.name": 1}, erased_at=T0 + timedelta(seconds=3)
    )
    done = certificate(destroyed, [rooms, own], clinical_retention_days=7300)
    assert (done.status, done.pending, done.completed_at) == (
        "completed",
        [],
        T0 + timedelta(seconds=3),
    )
    assert [(e.where, e.how, e.rows) for e in done.erased[1:]] == [
        ("scheduling: appointments.patient_name", "emptied", 2),
        ("scheduling: idempotency_keys", "deleted", 1),
        ("rooms: room_participants.name", "emptied", 1),
    ]
    clinical = done.kept[0]
    assert "7300 days" in clinical.until
    assert "13.787/2018" in clinical.legal_basis and "1.821/2007" in clinical.legal_basis
    assert certificate(destroyed, [own, rooms], clinical_retention_days=7300) == done


def test_a_new_erasure_only_when_none_or_data_arrived_after_the_last() -> None:
    finished = erasure(keys_destroyed_at=T0)
    assert needs_new_erasure(None, data_since=False)
    assert not needs_new_erasure(erasure(), data_since=True)  # in progress: carried on
    assert not needs_new_erasure(finished, data_since=False)  # answered again
    assert needs_new_erasure(finished, data_since=True)


# -- on the stack -----------------------------------------------------------------------------


@pytest.fixture
async def tenant_id(pool: asyncpg.Pool, tenant_key: str) -> str:
    tenant = await authenticate(pool, tenant_key)
    assert tenant is not None
    return tenant.id


async def a_doctor(api: httpx.AsyncClient) -> str:
    every_day = [
        {"day": d, "start": "00:00", "end": "23:30"}
        for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    ]
    made = await api.post(
        "/v1/doctors",
        json={
            "name": "Dr. João Pereira",
            "specialty": "Neurologia",
            "city": "Olinda",
            "schedule": {"timezone": "America/Recife", "slotMinutes": 30, "weekly": every_day},
        },
    )
    assert made.status_code == 201, made.text
    doctor_id: str = made.json()["id"]
    return doctor_id


async def book(
    api: httpx.AsyncClient, patient_ref: str, *, key: str | None = None
) -> dict[str, Any]:
    doctor_id = await a_doctor(api)
    slots = (await api.get(f"/v1/doctors/{doctor_id}/slots", params={"limit": 1})).json()
    headers = {"Idempotency-Key": key} if key else {}
    booked = await api.post(
        "/v1/appointments",
        headers=headers,
        json={
            "doctorId": doctor_id,
            "startsAt": slots["slots"][0]["startsAt"],
            "patientRef": patient_ref,
            "patientName": NAME,
            "patientContact": CONTACT,
            "reason": REASON,
        },
    )
    assert booked.status_code == 201, booked.text
    answer: dict[str, Any] = booked.json()
    return answer


async def completed(api: httpx.AsyncClient, patient_ref: str) -> dict[str, Any]:
    async def certificate_done() -> dict[str, Any] | None:
        answer = await api.get(f"/v1/patients/{patient_ref}/erasure")
        body: dict[str, Any] = answer.json()
        return body if answer.status_code == 200 and body["status"] == "completed" else None

    return await eventually(certificate_done, timeout=30)


def resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


@pytest.fixture
async def livekit(settings: Settings) -> AsyncIterator[lk.LiveKitAPI]:
    async with lk.LiveKitAPI(
        settings.livekit_url, settings.livekit_api_key, settings.livekit_api_secret
    ) as client:
        yield client


async def test_erasing_a_patient_empties_their_rows_and_answers_a_certificate(
    api: httpx.AsyncClient,
    bus: Bus,
    pool: asyncpg.Pool,
    tenant_id: str,
    livekit: lk.LiveKitAPI,
) -> None:
    patient_ref = f"pac-{uuid.uuid4().hex[:8]}"
    appointment = await book(api, patient_ref, key=str(uuid.uuid4()))
    assert (appointment["patientName"], appointment["patientContact"]) == (NAME, CONTACT)
    stored = await pool.fetchrow(
        "SELECT patient_name, patient_contact, reason FROM appointments WHERE id = $1",
        appointment["id"],
    )
    assert stored is not None and all(is_sealed(value) for value in stored.values())

    room = f"consulta-{uuid.uuid4().hex[:8]}"
    made = await api.post(
        "/v1/rooms", json={"name": room, "metadata": ROOM_NOTE, "patientRef": patient_ref}
    )
    assert made.status_code == 201, made.text
    assert made.json()["metadata"] == ROOM_NOTE  # the clinic reads it in clear ...
    listed = await livekit.room.list_rooms(
        lk.ListRoomsRequest(names=[livekit_room(tenant_id, room)])
    )
    assert is_sealed(listed.rooms[0].metadata)  # ... LiveKit holds only the token

    anamnesis = record(room, patient_ref=patient_ref)
    await bus.publish(anamnesis, tenant=tenant_id, key=anamnesis.dispatch_id)
    record_url = f"/v1/consultations/{anamnesis.dispatch_id}/anamnesis"

    async def exported() -> dict[str, Any] | None:
        answer = await api.get(f"/v1/patients/{patient_ref}/data")
        bundle: dict[str, Any] = answer.json()
        ready = resources(bundle, "QuestionnaireResponse") and resources(bundle, "Communication")
        return bundle if ready else None

    before = await eventually(exported)
    Bundle.model_validate(before)  # valid FHIR R4
    [person] = resources(before, "Patient")
    assert person["name"] == [{"text": NAME}] and person["telecom"][0]["value"] == CONTACT
    assert resources(before, "Appointment")[0]["description"] == REASON
    assert resources(before, "Communication")[0]["payload"] == [{"contentString": ROOM_NOTE}]

    answer = await api.post(
        f"/v1/patients/{patient_ref}/erasure", headers={"X-Purpose": "patient-request"}
    )
    assert answer.status_code in (200, 202), answer.text
    first = answer.json()
    done = await completed(api, patient_ref)
    assert done["erasureId"] == first["erasureId"] and done["pending"] == []
    assert done["keysDestroyed"] and done["requestedBy"].startswith("api_key:mk_")
    assert done["purpose"] == "patient-request"
    rows = {e["where"]: e["rows"] for e in done["erased"] if e["rows"] is not None}
    assert rows == {
        "scheduling: appointments.patient_name": 1,
        "scheduling: appointments.patient_contact": 1,
        "scheduling: appointments.reason": 1,
        "scheduling: idempotency_keys": 1,
        "rooms: room_instances.metadata": 1,
    }
    assert "anamnesis" in done["kept"][0]["what"] and "13.787" in done["kept"][0]["legalBasis"]

    # The rows are empty, LiveKit's copy is unreadable, the clinical record is kept.
    shown = (await api.get(f"/v1/appointments/{appointment['id']}")).json()
    assert (shown["patientName"], shown["patientContact"], shown["reason"]) == (None, None, None)
    assert (await api.get(f"/v1/rooms/{room}")).json()["metadata"] == ""
    held = await livekit.room.list_rooms(lk.ListRoomsRequest(names=[livekit_room(tenant_id, room)]))
    assert await bus.phi.open_text(held.rooms[0].metadata, tenant=tenant_id, path="metadata") == (
        "[apagado]"
    )
    assert (await api.get(record_url)).json()["summaryPtBr"] == anamnesis.summary_pt_br
    after = (await api.get(f"/v1/patients/{patient_ref}/data")).json()
    Bundle.model_validate(after)
    assert NAME not in str(after) and CONTACT not in str(after) and ROOM_NOTE not in str(after)
    assert resources(after, "QuestionnaireResponse")  # kept by law

    # Asking again answers the same certificate; the reads of it are in the access log.
    again = await api.post(f"/v1/patients/{patient_ref}/erasure")
    assert again.status_code == 200
    assert again.json() == done
    log = (await api.get("/v1/access-log", params={"patientRef": patient_ref})).json()
    assert {"patient_data", "erasure_certificate"} <= {e["resource"] for e in log["entries"]}


async def test_an_erasure_killed_after_the_key_is_gone_is_carried_on_by_its_restart(
    api: httpx.AsyncClient, pool: asyncpg.Pool, tenant_id: str, running_stack: Stack
) -> None:
    patient_ref = f"pac-{uuid.uuid4().hex[:8]}"
    appointment = await book(api, patient_ref)
    supervisor = running_stack.supervisor
    point = "erasure.after_keys_destroyed"
    await supervisor.stop_part("scheduling")
    await supervisor.start_again("scheduling", env={VARIABLE: point})
    try:
        answer = await api.post(f"/v1/patients/{patient_ref}/erasure")
        assert answer.status_code == 503  # the gateway: the service died under the request
        part = supervisor.part("scheduling")
        assert part.process is not None
        assert await asyncio.wait_for(part.process.wait(), 30) == CRASH_EXIT_CODE
        assert f"crash point {point} reached" in supervisor.log_path(part).read_text()

        # Killed between the two steps: the key is gone, the rows are not yet.
        destroyed = await pool.fetchval(
            "SELECT destroyed_at FROM data_keys WHERE tenant_id = $1 AND patient_ref = $2"
            " AND purpose = 'personal'",
            tenant_id,
            patient_ref,
        )
        assert destroyed is not None
        name = await pool.fetchval(
            "SELECT patient_name FROM appointments WHERE id = $1", appointment["id"]
        )
        assert is_sealed(name)
        in_progress = await pool.fetchrow(
            "SELECT erasure_id, keys_destroyed_at FROM patient_erasures"
            " WHERE tenant_id = $1 AND patient_ref = $2",
            tenant_id,
            patient_ref,
        )
        assert in_progress is not None and in_progress["keys_destroyed_at"] is None
    finally:
        await supervisor.start_again("scheduling", env={VARIABLE: ""})

    # Started again, it carries the erasure on by itself: the rows follow.
    done = await completed(api, patient_ref)
    assert done["erasureId"] == in_progress["erasure_id"]
    assert done["keysDestroyedAt"] is not None and len(done["keysDestroyed"]) == 1
    name = await pool.fetchval(
        "SELECT patient_name FROM appointments WHERE id = $1", appointment["id"]
    )
    assert name is None
    again = await api.post(f"/v1/patients/{patient_ref}/erasure")
    assert (again.status_code, again.json()) == (200, done)
