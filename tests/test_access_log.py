"""The access log (LGPD Art. 37): every read of a patient's personal data through the API is
recorded (who, what for), listed by patient, and chained so that an entry edited or removed in
PostgreSQL shows in the verification."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import msgspec
import pytest
from click.testing import CliRunner

from deploy.stack import StackState
from services.scheduling.patients.cli import access_log
from shared.access import GENESIS, Entry, chained, entry_hash, reader_of, verify_chain
from shared.config import Settings, to_environ
from shared.events.patients import PersonalDataRead
from shared.tenants import authenticate, create_tenant
from tests.support import eventually

# -- the chain, pure --------------------------------------------------------------------------


def read(n: int) -> PersonalDataRead:
    return PersonalDataRead(
        patient_ref=f"pac-{n}",
        resource="anamnesis",
        resource_id=f"d{n}",
        reader="api_key:mk_abcdefgh",
        purpose="treatment",
        service="scheduling",
        read_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=n),
    )


def chain(length: int) -> list[Entry]:
    entries: list[Entry] = []
    for n in range(1, length + 1):
        entries.append(chained(entries[-1] if entries else None, f"e{n}", read(n)))
    return entries


def test_each_entry_holds_the_hash_of_the_one_before() -> None:
    entries = chain(3)
    assert [e.position for e in entries] == [1, 2, 3]
    assert entries[0].previous_hash == GENESIS
    assert [e.previous_hash for e in entries[1:]] == [e.hash for e in entries[:-1]]
    assert verify_chain(entries) == []


def test_an_edited_entry_is_named_and_so_is_one_rehashed_to_hide_it() -> None:
    entries = chain(4)
    edited = msgspec.structs.replace(entries[1], purpose="marketing")
    problems = verify_chain([entries[0], edited, *entries[2:]])
    assert [(p.position, p.problem) for p in problems] == [(2, "edited")]
    # Its hash made again too: it holds, but the next entry's link no longer does.
    rehashed = msgspec.structs.replace(edited, hash=entry_hash(edited))
    problems = verify_chain([entries[0], rehashed, *entries[2:]])
    assert [(p.position, p.problem) for p in problems] == [(3, "relinked")]


def test_a_removed_entry_leaves_a_gap() -> None:
    entries = chain(4)
    problems = verify_chain([entries[0], entries[1], entries[3]])
    assert [(p.position, p.problem) for p in problems] == [(4, "removed")]


def test_the_reader_is_the_key_prefix_and_the_purpose_a_code() -> None:
    reader = reader_of("Bearer mk_0123456789abcdef", "patient-request", "scheduling")
    assert (reader.reader, reader.purpose) == ("api_key:mk_01234567", "patient-request")
    with pytest.raises(ValueError, match="X-Purpose"):
        reader_of("Bearer mk_x", "Maria da Silva pediu", "scheduling")
    with pytest.raises(ValueError, match="X-Purpose"):
        reader_of("Bearer mk_x", "treatment\n", "scheduling")


# -- through the API --------------------------------------------------------------------------


@pytest.fixture
async def clinic(stack: StackState, pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    """A clinic of its own: its chain holds only this test's reads (and may be tampered with)."""
    async with pool.acquire() as conn:
        _, key = await create_tenant(conn, f"Clínica {uuid.uuid4().hex[:6]}")
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=15
    ) as client:
        yield client


async def book(clinic: httpx.AsyncClient, patient_ref: str) -> dict[str, object]:
    doctor = await clinic.post(
        "/v1/doctors",
        json={
            "name": "Dra. Ana Souza",
            "specialty": "Clínica geral",
            "city": "Recife",
            "schedule": {
                "timezone": "America/Recife",
                "slotMinutes": 30,
                "weekly": [
                    {"day": d, "start": "08:00", "end": "18:00"}
                    for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
                ],
            },
        },
    )
    assert doctor.status_code == 201, doctor.text
    slots = await clinic.get(f"/v1/doctors/{doctor.json()['id']}/slots", params={"limit": 1})
    booked = await clinic.post(
        "/v1/appointments",
        json={
            "doctorId": doctor.json()["id"],
            "startsAt": slots.json()["slots"][0]["startsAt"],
            "patientRef": patient_ref,
            "patientName": "Maria da Silva",
            "patientContact": "+55 81 99999-0000",
            "reason": "dor de cabeça",
        },
    )
    assert booked.status_code == 201, booked.text
    answer: dict[str, object] = booked.json()
    return answer


async def entries_of(clinic: httpx.AsyncClient, patient_ref: str, count: int) -> list[dict]:  # type: ignore[type-arg]
    async def listed() -> list[dict] | None:  # type: ignore[type-arg]
        answer = await clinic.get("/v1/access-log", params={"patientRef": patient_ref})
        found = answer.json()["entries"]
        return found if len(found) >= count else None

    return await eventually(listed)


async def test_reads_of_personal_data_are_logged_with_reader_and_purpose(
    clinic: httpx.AsyncClient,
) -> None:
    patient_ref = f"pac-{uuid.uuid4().hex[:8]}"
    appointment = await book(clinic, patient_ref)
    # Booking supplies the data: not a read. Reading it back is, with and without a purpose.
    shown = await clinic.get(
        f"/v1/appointments/{appointment['id']}", headers={"X-Purpose": "treatment"}
    )
    assert shown.json()["patientName"] == "Maria da Silva"
    await clinic.get("/v1/appointments", params={"patientRef": patient_ref})
    refused = await clinic.get(
        f"/v1/appointments/{appointment['id']}", headers={"X-Purpose": "ver a Maria"}
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "invalid_purpose"

    entries = await entries_of(clinic, patient_ref, 2)
    assert [(e["resource"], e["resourceId"], e["purpose"]) for e in entries] == [
        ("appointment", appointment["id"], "treatment"),
        ("appointment", appointment["id"], ""),
    ]
    key_prefix = clinic.headers["Authorization"].removeprefix("Bearer ")[:11]
    assert {e["reader"] for e in entries} == {f"api_key:{key_prefix}"}
    assert entries[1]["previousHash"] == entries[0]["hash"]
    verified = (await clinic.get("/v1/access-log/verify")).json()
    assert verified["intact"] and verified["entries"] == verified["readsOnLog"] == 2


async def test_an_entry_edited_or_removed_in_postgres_is_found(
    clinic: httpx.AsyncClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    patient_ref = f"pac-{uuid.uuid4().hex[:8]}"
    appointment = await book(clinic, patient_ref)
    for _ in range(4):
        await clinic.get(f"/v1/appointments/{appointment['id']}", headers={"X-Purpose": "audit"})
    await entries_of(clinic, patient_ref, 4)
    tenant = await authenticate(pool, clinic.headers["Authorization"].removeprefix("Bearer "))
    assert tenant is not None
    assert (await clinic.get("/v1/access-log/verify")).json()["intact"]

    # Someone with the database's password hides who read, and why.
    await pool.execute(
        "UPDATE access_log SET reader = 'api_key:mk_someoneelse', purpose = 'treatment'"
        " WHERE tenant_id = $1 AND position = 2",
        tenant.id,
    )
    verified = (await clinic.get("/v1/access-log/verify")).json()
    assert not verified["intact"]
    assert verified["problems"] == [{"position": 2, "problem": "edited"}]

    # ... then removes an entry: a gap; then the newest one: shorter than the event log.
    await pool.execute("DELETE FROM access_log WHERE tenant_id = $1 AND position = 3", tenant.id)
    verified = (await clinic.get("/v1/access-log/verify")).json()
    assert [(p["position"], p["problem"]) for p in verified["problems"]] == [
        (2, "edited"),
        (4, "removed"),
    ]
    await pool.execute("DELETE FROM access_log WHERE tenant_id = $1 AND position = 4", tenant.id)
    verified = (await clinic.get("/v1/access-log/verify")).json()
    assert [(p["position"], p["problem"]) for p in verified["problems"]] == [
        (2, "edited"),
        (3, "removed"),
    ]
    assert (verified["entries"], verified["readsOnLog"]) == (2, 4)

    # The CLI also compares every entry with the read it was made from, on the event log.
    runner = CliRunner(env=to_environ(settings))
    result = await asyncio.to_thread(runner.invoke, access_log, ["verify", "--tenant", tenant.id])
    assert result.exit_code == 1, result.output
    assert f"tenant {tenant.id}: 2 entries, 4 reads on the event log" in result.output
    assert "position 2: differs from the event log" in result.output
    assert result.output.count("has no entry") == 2
