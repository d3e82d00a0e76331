"""Per-patient encryption on the real stack: the key service, sealing and opening, shredding a
key, the agent jobs' keys, the KEK that never leaves the key service, and its rotation."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import httpx
import nats
import pytest
from msgspec.structs import replace

from deploy.stack import StackState, child_environ
from services.keys import store
from services.keys.kek import LocalKeyring, keyring_path, parse_keyring
from services.keys.service import KeyService
from shared import keys_api, subjects
from shared.bus import Bus
from shared.config import Settings
from shared.crypto import DataKey, UnreadableError, is_sealed, key_id_of, new_secret
from shared.events import CODEC, PHI_STREAM, DeadLettered, Event, envelope
from shared.events.agents import AgentTranscribed, AgentUsageReported
from shared.events.clinical import AnamnesisRecorded
from shared.events.platform import DataKeyDestroyed
from shared.events.privacy import Clinical, Personal, Pseudonym
from shared.keys import KeyCache
from shared.phi import ERASED, ERASED_DOCUMENT, Phi, is_erased
from shared.tenants import create_tenant
from tests.support import eventually, watch
from tests.test_scheduling_anamnesis import record

NOW = datetime(2026, 1, 15, 12, 30, tzinfo=UTC)
OTHER_TENANT = "tzzzzzzzzzz"


class PatientNote(Event, frozen=True, kw_only=True):
    """A test-only event about a patient (the shape the patientRef work gives real events)."""

    TYPE: ClassVar[str] = "mediai.test.patient_note.v1"
    PRODUCER: ClassVar[str] = "tests"
    patient_ref: Pseudonym = ""
    note: Personal
    record: Clinical = ""


def tag() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
async def clinic(
    pool: asyncpg.Pool, stack: StackState
) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    """A tenant of its own (its key is destroyed in some tests) and an API client for it."""
    async with pool.acquire() as conn:
        tenant, key = await create_tenant(conn, f"Clínica {tag()}")
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
    ) as client:
        yield tenant.id, client


def another_process(bus: Bus) -> Phi:
    """What another process sees: its own cache, empty."""
    return Phi(KeyCache(bus.nc))


async def test_sealed_fields_round_trip_and_nothing_else_changes(
    bus: Bus, clinic: tuple[str, httpx.AsyncClient]
) -> None:
    tenant, _ = clinic
    said = AgentTranscribed(
        dispatch_id="d-1",
        room="consulta-1",
        role="intake",
        segment_id="s-1",
        speaker="user",
        participant_identity="paciente-1",
        text="Tenho asma desde os 8 anos.",
        spoken_at=NOW,
    )
    event = envelope(said, source="mediai/tests", tenant=tenant, subject="d-1")
    sealed = await bus.phi.seal(event)
    assert is_sealed(sealed.data.text)
    assert b"asma" not in CODEC.encode(sealed)
    assert replace(sealed.data, text=said.text) == said  # only the personal field changed
    assert await bus.phi.seal(sealed) == sealed  # sealing twice changes nothing
    assert await another_process(bus).open(sealed) == event

    # Nothing personal, nothing done: the same object back, no key asked for.
    usage = envelope(
        AgentUsageReported(
            dispatch_id="d-1", room="consulta-1", role="intake", period_start=NOW, period_end=NOW
        ),
        source="mediai/tests",
        tenant=tenant,
        subject="d-1",
    )
    assert await bus.phi.seal(usage) is usage
    quiet = envelope(replace(said, text=""), source="mediai/tests", tenant=tenant, subject="d")
    assert await bus.phi.seal(quiet) is quiet  # an empty value stays empty

    # Text written before encryption still reads.
    legacy = envelope(said, source="mediai/tests", tenant=tenant, subject="d-1")
    assert await bus.phi.open(legacy) == legacy


async def test_a_sealed_value_opens_only_in_its_own_field_and_untampered(
    bus: Bus, clinic: tuple[str, httpx.AsyncClient]
) -> None:
    tenant, _ = clinic
    anamnesis = record("consulta-1")
    sealed = await bus.phi.seal_data(anamnesis, tenant=tenant)
    assert set(sealed.questionnaire_response) == {"$sealed"}
    assert is_sealed(sealed.summary_pt_br)
    assert await bus.phi.open_data(sealed, tenant=tenant) == anamnesis

    moved = replace(sealed, summary_pt_br=sealed.questionnaire_response["$sealed"])
    assert (await bus.phi.open_data(moved, tenant=tenant)).summary_pt_br == ERASED
    token = sealed.summary_pt_br
    flipped = token[:-6] + ("A" if token[-6] != "A" else "B") + token[-5:]
    tampered = replace(sealed, summary_pt_br=flipped)
    assert (await bus.phi.open_data(tampered, tenant=tenant)).summary_pt_br == ERASED
    # Another tenant cannot use this tenant's key, even knowing its id.
    assert (await bus.phi.open_data(sealed, tenant=OTHER_TENANT)).summary_pt_br == ERASED


def test_a_data_key_refuses_what_it_did_not_seal() -> None:
    key = DataKey(key_id="k1", tenant="t", purpose="tenant", patient_ref="", secret=new_secret())
    other = DataKey(key_id="k1", tenant="t", purpose="tenant", patient_ref="", secret=new_secret())
    token = key.seal(b"Maria", "name")
    assert key.open(token, "name") == b"Maria"
    # Deterministic: one value, one token (projections compare, rebuilds must match); another
    # value or another field, another token.
    assert key.seal(b"Maria", "name") == token
    assert len({token, key.seal(b"Marta", "name"), key.seal(b"Maria", "metadata")}) == 3
    with pytest.raises(UnreadableError):
        key.open(token, "metadata")
    with pytest.raises(UnreadableError):
        other.open(token, "name")
    assert key_id_of(token) == "k1" and "Maria" not in token


async def test_each_patient_has_a_personal_and_a_clinical_key_and_cached_keys_cost_nothing(
    bus: Bus, clinic: tuple[str, httpx.AsyncClient]
) -> None:
    tenant, _ = clinic
    cache = KeyCache(bus.nc)
    phi = Phi(cache)

    async def sealed(patient: str) -> PatientNote:
        note = PatientNote(patient_ref=patient, note="Mora com a avó.", record="Asma leve.")
        return await phi.seal_data(note, tenant=tenant)

    a, b, nobody = await sealed("pac-a"), await sealed("pac-b"), await sealed("")
    assert key_id_of(a.note) != key_id_of(a.record)  # personal and clinical keys
    assert key_id_of(a.note) != key_id_of(b.note)  # one patient's keys are not another's
    assert key_id_of(nobody.note) == key_id_of(nobody.record)  # no patient: the tenant's key
    assert len({key_id_of(v) for v in (a.note, a.record, b.note, b.record, nobody.note)}) == 5
    opened = await another_process(bus).open_data(a, tenant=tenant)
    assert (opened.note, opened.record) == ("Mora com a avó.", "Asma leve.")

    asked = cache.fetches
    for _ in range(200):
        await sealed("pac-a")
        await phi.open_data(a, tenant=tenant)
    assert cache.fetches == asked  # once cached, no round trip to the key service


async def test_erasing_a_patient_makes_every_copy_unreadable_and_consumers_carry_on(
    bus: Bus, pool: asyncpg.Pool, clinic: tuple[str, httpx.AsyncClient]
) -> None:
    """A patient's clinical key is destroyed: the stream's copy of their anamnesis, a dead
    letter of it and the stored row can no longer be read, in any process, within seconds;
    the tenant's other data still reads, and the consumers carry on."""
    tenant, api = clinic
    room, patient = f"consulta-{tag()}", f"pac-{tag()}"

    def url(record: AnamnesisRecorded) -> str:
        return f"/v1/consultations/{record.dispatch_id}/anamnesis"

    async def status(record: AnamnesisRecorded, code: int) -> bool:
        return (await api.get(url(record))).status_code == code

    theirs = record(room, patient_ref=patient)
    nobodys = record(room)  # about no patient: the tenant's key
    published = await bus.publish(theirs, tenant=tenant, key=room)
    await bus.publish(nobodys, tenant=tenant, key=room)
    assert await eventually(lambda: status(theirs, 200))
    assert await eventually(lambda: status(nobodys, 200))

    kept = await bus.js.get_msg(
        subjects.stream_name(PHI_STREAM), (await _sequence(bus, published.id))
    )
    assert kept.data is not None and theirs.summary_pt_br.encode() not in kept.data
    row = await pool.fetchrow(
        "SELECT questionnaire_response, summary_pt_br FROM anamnesis_records WHERE event_id = $1",
        published.id,
    )
    assert is_sealed(row["summary_pt_br"]) and set(row["questionnaire_response"]) == {"$sealed"}
    clinical_key = key_id_of(row["summary_pt_br"])
    stream_copy = CODEC.decode(kept.data)
    assert isinstance(stream_copy.data, AnamnesisRecorded)
    assert key_id_of(stream_copy.data.summary_pt_br) == clinical_key  # one key, every copy
    invalid = record(
        room, patient_ref=patient, questionnaire_response={"resourceType": "QuestionnaireResponse"}
    )
    async with watch(bus, DeadLettered, opened=False) as letters:
        poisoned = await bus.publish(invalid, tenant=tenant, key=room)
        letter = await letters.wait_for(lambda e: e.data.original_event_id == poisoned.id)
    assert is_sealed(letter.data.reason) and is_sealed(letter.data.original_payload)
    # Sealed now, published after the erasure: a late producer, a replay.
    late_record = record(room, patient_ref=patient)
    late = await bus.phi.seal(
        envelope(late_record, source="mediai/agent", tenant=tenant, subject=room)
    )

    async with watch(bus, DataKeyDestroyed, tenant=tenant) as notices:
        reply = await keys_api.call(
            bus.nc,
            keys_api.DestroyKeysRequest(tenant=tenant, patient_ref=patient, purpose="clinical"),
        )
        notice = await notices.next(timeout=10)
    assert reply.destroyed == [clinical_key]
    assert isinstance(notice.data, DataKeyDestroyed)
    assert (notice.data.key_id, notice.data.patient_ref) == (clinical_key, patient)
    wrapped = await pool.fetchval("SELECT wrapped FROM data_keys WHERE key_id = $1", clinical_key)
    assert wrapped is None
    again = await keys_api.call(
        bus.nc, keys_api.DestroyKeysRequest(tenant=tenant, patient_ref=patient, purpose="clinical")
    )
    assert again.destroyed == []  # idempotent

    # Every copy is unreadable: the scheduling service (which had the key cached) answers 410
    # within seconds, this process's cache let go of it, and a new process never gets it.
    assert await eventually(lambda: status(theirs, 410), timeout=5)

    async def erased_here() -> bool:
        return is_erased((await bus.phi.open(stream_copy)).data.summary_pt_br)

    assert await eventually(erased_here, timeout=5)
    fresh = (await another_process(bus).open(stream_copy)).data
    assert isinstance(fresh, AnamnesisRecorded)
    assert (fresh.summary_pt_br, fresh.questionnaire_response) == (ERASED, ERASED_DOCUMENT)
    dead = (await another_process(bus).open(letter)).data
    assert isinstance(dead, DeadLettered) and dead.reason.startswith("poison:")
    inside = (await another_process(bus).open(CODEC.decode(dead.original_payload.encode()))).data
    assert isinstance(inside, AnamnesisRecorded)
    assert inside.questionnaire_response == ERASED_DOCUMENT  # the patient's part is gone

    # The tenant's other data reads; the consumers carry on: the late record is skipped (not
    # dead-lettered), a new one about the patient is served under their new key.
    assert await status(nobodys, 200)
    await bus.publish_envelope(late)
    after = record(room, patient_ref=patient, summary_pt_br="Depois do apagamento.")
    await bus.publish(after, tenant=tenant, key=room)

    async def served_after() -> bool:
        answer = await api.get(url(after))
        return answer.status_code == 200 and answer.json()["summaryPtBr"] == after.summary_pt_br

    assert await eventually(served_after)
    assert await status(late_record, 404)
    stored = await pool.fetchval(
        "SELECT count(*) FROM anamnesis_records WHERE tenant_id = $1", tenant
    )
    assert stored == 3  # theirs (unreadable now), nobody's and the new one; never the late one


async def _sequence(bus: Bus, event_id: str) -> int:
    """Where an event sits in the PHI stream (its Nats-Msg-Id is its id)."""
    info = await bus.js.stream_info(subjects.stream_name(PHI_STREAM))
    for sequence in range(info.state.last_seq, info.state.first_seq - 1, -1):
        message = await bus.js.get_msg(subjects.stream_name(PHI_STREAM), sequence)
        if message.headers and message.headers.get("Nats-Msg-Id") == event_id:
            return sequence
    raise AssertionError(f"event {event_id} is not in the PHI stream")


async def test_an_agent_job_gets_keys_only_for_a_live_dispatch_of_its_tenant(
    pool: asyncpg.Pool, settings: Settings, clinic: tuple[str, httpx.AsyncClient]
) -> None:
    tenant, _ = clinic
    keys = KeyService(pool, LocalKeyring.load(settings))
    with_patient, without, ended = (f"d-{tag()}" for _ in range(3))
    await store.dispatch_requested(pool, with_patient, tenant, "pac-7", NOW)
    await store.dispatch_requested(pool, without, tenant, "", NOW)
    await store.dispatch_ended(pool, ended, tenant, NOW)  # the end seen before the request
    await store.dispatch_requested(pool, ended, tenant, "pac-7", NOW)

    granted = await keys.for_dispatch(tenant, with_patient)
    assert granted is not None
    assert {(k.purpose, k.patient_ref) for k in granted} == {
        ("personal", "pac-7"),
        ("clinical", "pac-7"),
    }
    alone = await keys.for_dispatch(tenant, without)
    assert alone is not None and [(k.purpose, k.patient_ref) for k in alone] == [("tenant", "")]
    assert await keys.for_dispatch(OTHER_TENANT, with_patient) is None  # another tenant's
    assert await keys.for_dispatch(tenant, ended) is None
    assert await keys.for_dispatch(tenant, f"d-{tag()}") is None  # unknown
    await store.dispatch_ended(pool, with_patient, tenant, NOW)
    assert await keys.for_dispatch(tenant, with_patient) is None


async def test_a_clinical_key_unused_for_the_retention_period_is_destroyed(
    pool: asyncpg.Pool, settings: Settings, clinic: tuple[str, httpx.AsyncClient]
) -> None:
    tenant, _ = clinic
    keys = KeyService(pool, LocalKeyring.load(settings))
    old = await keys.for_sealing(tenant, f"pac-{tag()}", "clinical")
    recent = await keys.for_sealing(tenant, f"pac-{tag()}", "clinical")
    personal = await keys.for_sealing(tenant, "pac-personal", "personal")
    await pool.execute(
        "UPDATE data_keys SET last_sealed_at = now() - interval '21 years'"
        " WHERE key_id = ANY($1::text[])",
        [old.key_id, personal.key_id],
    )
    retention = 20 * 365 * 86400
    assert await keys.expire_clinical(retention, datetime.now(UTC)) >= 1
    state = {
        row["key_id"]: (row["destroyed_at"] is not None, row["destroy_reason"])
        for row in await pool.fetch(
            "SELECT key_id, destroyed_at, destroy_reason FROM data_keys WHERE tenant_id = $1",
            tenant,
        )
    }
    assert state[old.key_id] == (True, "retention")
    assert state[recent.key_id] == (False, None)
    assert state[personal.key_id] == (False, None)  # personal data follows erasure, not this


def _secrets_of(keyring: Path) -> list[bytes]:
    """Every KEK of the keyring as it could leak: raw, base64, hex."""
    found = []
    for _, secret in parse_keyring(keyring.read_text(), str(keyring)):
        found += [secret, base64.b64encode(secret), secret.hex().encode()]
    return found


def _processes_of(stack: StackState, data_dir: Path) -> dict[int, bytes]:
    """The environment of every process of this stack: its parts, and whatever they started
    (agent workers and their job processes inherit the data folder's setting)."""
    marker = f"MEDIAI_DATA_DIR={data_dir}".encode()
    pids = {p.pid for p in stack.parts if p.pid}
    environments = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if int(entry.name) in pids or marker in environ:
            environments[int(entry.name)] = environ
    return environments


async def test_the_kek_never_leaves_the_key_service(
    bus: Bus, settings: Settings, stack: StackState, clinic: tuple[str, httpx.AsyncClient]
) -> None:
    tenant, _ = clinic
    path = keyring_path(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secrets = _secrets_of(path)
    environments = _processes_of(stack, settings.data_dir)
    assert len(environments) >= len(stack.parts)
    for pid, environ in environments.items():
        assert not any(secret in environ for secret in secrets), f"process {pid} holds the KEK"

    # On the bus: neither the KEK nor the data keys handed out travel in clear.
    listener = await nats.connect(settings.nats_url)
    traffic: list[bytes] = []

    async def capture(message: Any) -> None:
        traffic.append(message.subject.encode() + b" " + message.data)

    await listener.subscribe(">", cb=capture)
    await listener.flush()
    cache = KeyCache(bus.nc)
    key = await cache.for_sealing(tenant, "pac-listened", "personal")
    assert await cache.for_opening(tenant, key.key_id) is not None
    await bus.nc.flush()
    await listener.flush()
    await listener.close()
    assert any(b"rpc.keys.for_sealing" in message for message in traffic)
    assert any(b"_INBOX" in message for message in traffic)  # the replies were seen too
    handed_out = [key.secret, base64.b64encode(key.secret), key.secret.hex().encode()]
    for leak in secrets + handed_out:
        assert not any(leak in message for message in traffic)


def _mediai(settings: Settings, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "deploy", "keys", *args],
        env={**os.environ, **child_environ(settings)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_rotation_rewraps_every_key_and_everything_still_opens(
    bus: Bus, pool: asyncpg.Pool, settings: Settings, clinic: tuple[str, httpx.AsyncClient]
) -> None:
    tenant, _ = clinic
    sealed = await another_process(bus).seal_text(
        "Maria da Silva", tenant=tenant, patient_ref="pac-rot", kind="personal", path="name"
    )
    path = keyring_path(settings)
    old = parse_keyring(path.read_text(), str(path))[0][0]

    rotated = _mediai(settings, "rotate")
    keyring = parse_keyring(path.read_text(), str(path))
    new = keyring[0][0]
    assert new != old and [k for k, _ in keyring][1:] == [old]
    assert f"with {new}" in rotated and "re-wrapped" in rotated
    per_kek = await store.keys_per_kek(pool)
    assert set(per_kek) == {new}, per_kek
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    # The running key service unwraps with the new KEK and wraps new keys with it, unrestarted.
    assert await another_process(bus).open_text(sealed, tenant=tenant, path="name") == (
        "Maria da Silva"
    )
    fresh_key = await KeyCache(bus.nc).for_sealing(tenant, f"pac-{tag()}", "clinical")
    kek_of_new = await pool.fetchval(
        "SELECT kek_id FROM data_keys WHERE key_id = $1", fresh_key.key_id
    )
    assert kek_of_new == new

    assert "retired 1" in _mediai(settings, "retire")
    assert [k for k, _ in parse_keyring(path.read_text(), str(path))] == [new]
    assert await another_process(bus).open_text(sealed, tenant=tenant, path="name") == (
        "Maria da Silva"
    )
    status = _mediai(settings, "status")
    assert f"current  {new}" in status and old not in status
