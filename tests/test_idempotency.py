"""Idempotent creation (shared.idempotency) against the real stack, through the gateway: replays,
mismatches, a request still running, tenant and operation scoping, 5xx answers not kept,
expired and abandoned keys, and the header in every creating operation's OpenAPI document."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from deploy.stack import StackState
from shared import idempotency_store
from shared.idempotency_store import request_hash, verdict
from shared.tenants import authenticate
from tests.support import eventually
from tests.test_scheduling_http import booking, free_slots, new_doctor, outbox_events_about

REPLAYED = "Idempotent-Replayed"


def doctor_body(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "specialty": "Pediatria",
        "city": "Recife",
        "schedule": {
            "slotMinutes": 30,
            "weekly": [{"day": "mon", "start": "08:00", "end": "12:00"}],
        },
    }


def new_key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


async def tenant_id(pool: asyncpg.Pool, key: str) -> str:
    tenant = await authenticate(pool, key)
    assert tenant is not None
    return tenant.id


async def doctors_named(pool: asyncpg.Pool, name: str) -> list[str]:
    return [r["id"] for r in await pool.fetch("SELECT id FROM doctors WHERE name = $1", name)]


async def key_row(pool: asyncpg.Pool, route: str, key: str) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT * FROM idempotency_keys WHERE route = $1 AND key = $2", route, key
    )


@pytest.fixture
async def other_api(stack: StackState, other_tenant_key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {other_tenant_key}"}
    ) as client:
        yield client


# --- the rule, without infrastructure ---------------------------------------------------------


def test_the_same_request_hashes_the_same_whatever_its_json_spelling() -> None:
    spaced = b'{ "b": [1, 2], "a": {"y": "\\u00e9", "x": null} }'
    tight = '{"a":{"x":null,"y":"é"},"b":[1,2]}'.encode()
    assert request_hash("/v1/doctors", b"", spaced) == request_hash("/v1/doctors", b"", tight)
    assert request_hash("/v1/doctors", b"", tight) != request_hash(
        "/v1/doctors", b"", b'{"b":[2,1]}'
    )
    assert request_hash("/v1/doctors", b"", tight) != request_hash("/v1/doctors", b"x=1", tight)
    assert request_hash("/v1/a", b"", b"not json") != request_hash("/v1/a", b"", b"not  json")


def test_what_a_request_finds_under_its_key() -> None:
    def found(
        state: str, *, same: bool = True, expired: bool = False, abandoned: bool = False
    ) -> str:
        return verdict(
            stored_hash="h",
            state=state,
            expired=expired,
            abandoned=abandoned,
            asked_hash="h" if same else "other",
        )

    assert found("done") == "replay"
    assert found("running") == "in_use"
    assert found("running", abandoned=True) == "retry"
    assert found("failed") == "retry"  # a 5xx kept no answer: run again, same ids
    assert found("done", same=False) == "mismatch"
    assert found("failed", same=False) == "mismatch"  # the failed one may have landed
    assert found("running", same=False, abandoned=True) == "mismatch"
    assert found("done", same=False, expired=True) == "fresh"


# --- through the gateway ----------------------------------------------------------------------


async def test_the_same_key_and_request_answer_the_first_answer_and_create_one_doctor(
    api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    name = f"Dr. Idempotente {uuid.uuid4().hex[:8]}"
    key = new_key()
    first = await api.post("/v1/doctors", json=doctor_body(name), headers=key)
    # The same JSON written otherwise (key order, spacing) is the same request.
    respelled = json.dumps(dict(reversed(doctor_body(name).items())), indent=2)
    again = await api.post(
        "/v1/doctors", content=respelled, headers={**key, "Content-Type": "application/json"}
    )
    assert first.status_code == again.status_code == 201, first.text
    assert REPLAYED not in first.headers
    assert again.headers[REPLAYED] == "true"
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.content == first.content
    assert await doctors_named(pool, name) == [first.json()["id"]]
    assert await outbox_events_about(pool, first.json()["id"]) == 1  # one DoctorCreated


async def test_the_same_key_with_another_request_is_refused_and_creates_nothing(
    api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    name = f"Dr. Primeiro {uuid.uuid4().hex[:8]}"
    key = new_key()
    assert (await api.post("/v1/doctors", json=doctor_body(name), headers=key)).status_code == 201
    other = await api.post("/v1/doctors", json=doctor_body(f"{name} (outro)"), headers=key)
    assert other.status_code == 422
    assert other.json()["error"]["code"] == "idempotency_key_mismatch"
    assert await doctors_named(pool, f"{name} (outro)") == []


async def test_a_key_belongs_to_one_tenant_and_one_operation(
    api: httpx.AsyncClient, other_api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    name = f"Dra. Escopo {uuid.uuid4().hex[:8]}"
    key = new_key()
    mine = await api.post("/v1/doctors", json=doctor_body(name), headers=key)
    theirs = await other_api.post("/v1/doctors", json=doctor_body(name), headers=key)
    assert mine.status_code == theirs.status_code == 201
    assert REPLAYED not in theirs.headers
    assert mine.json()["id"] != theirs.json()["id"]
    assert sorted(await doctors_named(pool, name)) == sorted(
        [mine.json()["id"], theirs.json()["id"]]
    )
    # The same key on another operation is another request.
    slot = (await free_slots(api, mine.json()["id"], 1))[0]["startsAt"]
    booked = await api.post("/v1/appointments", json=booking(mine.json()["id"], slot), headers=key)
    assert booked.status_code == 201, booked.text
    assert REPLAYED not in booked.headers


async def test_a_request_still_running_makes_the_same_key_wait_with_a_409(
    api: httpx.AsyncClient, pool: asyncpg.Pool, tenant_key: str
) -> None:
    """The first booking is held for real: the test locks the doctor's row, which the
    appointment's foreign key check must share, so the booking waits inside its transaction."""
    doctor = await new_doctor(api)
    slot = (await free_slots(api, doctor["id"], 1))[0]["startsAt"]
    key = new_key()
    body = booking(doctor["id"], slot)
    tenant = await tenant_id(pool, tenant_key)
    async with pool.acquire() as conn:
        lock = conn.transaction()
        await lock.start()
        try:
            await conn.execute(
                "SELECT 1 FROM doctors WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
                tenant,
                doctor["id"],
            )
            first = asyncio.create_task(api.post("/v1/appointments", json=body, headers=key))

            async def waiting_on_the_lock() -> bool:
                return bool(
                    await pool.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query ILIKE '%INSERT INTO appointments%'"
                    )
                )

            await eventually(waiting_on_the_lock)
            row = await key_row(pool, "POST /v1/appointments", key["Idempotency-Key"])
            assert row is not None and row["state"] == "running"
            second = await api.post("/v1/appointments", json=body, headers=key)
            assert second.status_code == 409
            assert second.json()["error"]["code"] == "idempotency_key_in_use"
            changed = await api.post(
                "/v1/appointments", json={**body, "patientRef": "someone-else"}, headers=key
            )
            assert changed.status_code == 422
            assert not first.done()
        finally:
            await lock.rollback()
    answered = await first
    assert answered.status_code == 201, answered.text
    replayed = await api.post("/v1/appointments", json=body, headers=key)
    assert (replayed.status_code, replayed.headers[REPLAYED]) == (201, "true")
    assert replayed.json() == answered.json()
    rows = await pool.fetch("SELECT id FROM appointments WHERE doctor_id = $1", doctor["id"])
    assert [r["id"] for r in rows] == [answered.json()["id"]]


async def test_two_racing_requests_with_one_key_make_one_doctor(
    api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    name = f"Dr. Corrida {uuid.uuid4().hex[:8]}"
    key = new_key()
    answers = await asyncio.gather(
        *(api.post("/v1/doctors", json=doctor_body(name), headers=key) for _ in range(5))
    )
    fresh = [a for a in answers if a.status_code == 201 and REPLAYED not in a.headers]
    assert len(fresh) == 1
    for answer in answers:
        if answer is not fresh[0]:
            assert answer.status_code == 409 or (
                answer.headers.get(REPLAYED) == "true" and answer.content == fresh[0].content
            ), answer.text
    assert await doctors_named(pool, name) == [fresh[0].json()["id"]]


async def test_an_invalid_key_is_a_clear_400_and_creates_nothing(
    api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    name = f"Dr. Chave {uuid.uuid4().hex[:8]}"
    for bad in ("x" * 256, "duas palavras", "chave-\xe7", ""):
        answer = await api.post(
            "/v1/doctors",
            json=doctor_body(name),
            headers=[("Idempotency-Key", bad.encode("latin-1"))],
        )
        assert answer.status_code == 400, bad
        error = answer.json()["error"]
        assert error["code"] == "invalid_idempotency_key"
        assert "visible ASCII" in error["message"]
    assert await doctors_named(pool, name) == []
    longest = await api.post(
        "/v1/doctors", json=doctor_body(name), headers={"Idempotency-Key": "k" * 255}
    )
    assert longest.status_code == 201


async def test_a_key_without_a_valid_api_key_is_still_a_401(stack: StackState) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url) as anonymous:
        answer = await anonymous.post("/v1/doctors", json=doctor_body("x"), headers=new_key())
    assert answer.status_code == 401


async def test_an_expired_key_is_a_new_request_and_is_pruned(
    api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    """A day passes (the row is dated back: the test cannot wait 24 hours)."""
    name = f"Dr. Ontem {uuid.uuid4().hex[:8]}"
    key = new_key()
    first = await api.post("/v1/doctors", json=doctor_body(name), headers=key)
    route, value = "POST /v1/doctors", key["Idempotency-Key"]
    await pool.execute(
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours'"
        " WHERE route = $1 AND key = $2",
        route,
        value,
    )
    later = await api.post("/v1/doctors", json=doctor_body(f"{name} 2"), headers=key)
    assert later.status_code == 201 and REPLAYED not in later.headers
    assert later.json()["id"] != first.json()["id"]  # a new seed: not the old doctor's id

    await pool.execute(
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours'"
        " WHERE route = $1 AND key = $2",
        route,
        value,
    )
    young = new_key()
    await api.post("/v1/doctors", json=doctor_body(f"{name} 3"), headers=young)
    assert await idempotency_store.prune(pool) >= 1
    assert await key_row(pool, route, value) is None
    assert await key_row(pool, route, young["Idempotency-Key"]) is not None


async def test_a_run_abandoned_by_a_dead_process_is_taken_over_with_its_ids(
    api: httpx.AsyncClient, pool: asyncpg.Pool, tenant_key: str
) -> None:
    """A process died while running a request: its row says 'running' and was claimed long
    ago (written here as that process left it). The retry takes it over and names the doctor
    from the same seed, so had the dead run created it, the retry would find it."""
    name = f"Dr. Abandonado {uuid.uuid4().hex[:8]}"
    body = doctor_body(name)
    encoded = json.dumps(body).encode()
    key, seed = str(uuid.uuid4()), uuid.uuid4()
    await pool.execute(
        "INSERT INTO idempotency_keys (tenant_id, route, key, request_hash, seed, claim,"
        " claimed_at) VALUES ($1, 'POST /v1/doctors', $2, $3, $4, $5, now() - interval '2 minutes')",
        await tenant_id(pool, tenant_key),
        key,
        request_hash("/v1/doctors", b"", encoded),
        seed,
        uuid.uuid4(),
    )
    retried = await api.post("/v1/doctors", json=body, headers={"Idempotency-Key": key})
    assert retried.status_code == 201, retried.text
    assert retried.json()["id"] == str(uuid.uuid5(seed, "doctor"))
    # ... and a retry of that retry is a replay, not a third run.
    again = await api.post("/v1/doctors", json=body, headers={"Idempotency-Key": key})
    assert again.headers[REPLAYED] == "true"
    assert await doctors_named(pool, name) == [retried.json()["id"]]


async def test_a_retry_after_a_5xx_whose_effect_landed_finds_what_it_made(
    api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    """The first run committed the doctor, but its answer was a 5xx (kept as 'failed', no
    answer): the retry runs again with the same seed, finds the doctor and announces nothing."""
    name = f"Dr. Falhou {uuid.uuid4().hex[:8]}"
    key = new_key()
    first = await api.post("/v1/doctors", json=doctor_body(name), headers=key)
    await pool.execute(
        "UPDATE idempotency_keys SET state = 'failed', status_code = NULL, body = NULL"
        " WHERE route = 'POST /v1/doctors' AND key = $1",
        key["Idempotency-Key"],
    )
    retried = await api.post("/v1/doctors", json=doctor_body(name), headers=key)
    assert retried.status_code == 201 and REPLAYED not in retried.headers  # it ran again
    assert retried.json()["id"] == first.json()["id"]
    assert await doctors_named(pool, name) == [first.json()["id"]]
    assert await outbox_events_about(pool, first.json()["id"]) == 1


@pytest.mark.livekit
async def test_a_5xx_is_not_kept_so_the_retry_runs_again(
    api: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    """A real 5xx: the test stack runs no egress worker, so starting an egress is a 503."""
    room = f"idem-{uuid.uuid4().hex[:8]}"
    assert (await api.post("/v1/rooms", json={"name": room})).status_code == 201
    key = new_key()
    for _ in range(2):
        answer = await api.post("/v1/egress/start", json={"room": room}, headers=key)
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "egress_unavailable"
        assert REPLAYED not in answer.headers
        row = await key_row(pool, "POST /v1/egress/start", key["Idempotency-Key"])
        assert row is not None and (row["state"], row["body"]) == ("failed", None)
    # The failed run may have started something: the key stays bound to its request.
    other = await api.post("/v1/egress/start", json={"room": room, "output": "ogg"}, headers=key)
    assert other.status_code == 422


CREATING = {
    "rooms": [("/v1/rooms", "post"), ("/v1/egress/start", "post"), ("/v1/ingress", "post")],
    "dispatcher": [("/v1/agents", "post")],
    "scheduling": [("/v1/doctors", "post"), ("/v1/appointments", "post")],
    "billing": [("/v1/audits", "post")],
}
NOT_CREATING = {
    "token": [("/v1/tokens", "post"), ("/v1/view-tokens", "post")],
    "rooms": [("/v1/rooms/{name}/data", "post"), ("/v1/egress/{egress_id}/stop", "post")],
    "dispatcher": [("/v1/agents/{dispatch_id}/commands", "post"), ("/v1/agents", "get")],
    "webhooks": [("/v1/webhooks/livekit", "post")],
}


async def test_every_creating_operation_documents_the_header_and_its_errors(
    stack: StackState,
) -> None:
    urls = {part.name: part.url for part in stack.parts}
    # A service builds its OpenAPI document on the first ask: seconds on a busy machine.
    async with httpx.AsyncClient(timeout=60) as client:

        async def operation(service: str, path: str, method: str) -> dict[str, Any]:
            schema = (await client.get(f"{urls[service]}/schema/openapi.json")).json()
            found: dict[str, Any] = schema["paths"][path][method]
            return found

        for service, operations in CREATING.items():
            if service not in urls:
                continue
            for path, method in operations:
                op = await operation(service, path, method)
                [header] = [p for p in op["parameters"] if p["name"] == "Idempotency-Key"]
                assert header["in"] == "header" and header["required"] is False
                assert header["schema"]["pattern"] == "^[!-~]{1,255}$"
                for status, code in (
                    ("400", "invalid_idempotency_key"),
                    ("409", "idempotency_key_in_use"),
                    ("422", "idempotency_key_mismatch"),
                ):
                    assert code in op["responses"][status]["description"], (path, status)
        for service, operations in NOT_CREATING.items():
            if service not in urls:
                continue
            for path, method in operations:
                op = await operation(service, path, method)
                assert "Idempotency-Key" not in str(op.get("parameters", [])), path
