"""Corrections are events, against a private stack: LiveKit's webhooks really lost (the webhooks
service stopped by its pid while a participant leaves and another joins, until LiveKit gives
up), the reconciliation publishing what it found, the rooms read model and billing folding it,
the audit by replay agreeing, and the read model rebuilt from the log equal to the live one.

A private stack (its own NATS, Postgres, LiveKit, token, rooms, webhooks, billing and gateway,
the reconciliation every second) so stopping a service disturbs no other test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from livekit import api as lk
from livekit import rtc
from livekit.protocol import models

from deploy.stack import Stack, StackState, service_part
from services.rooms.projection import READ_MODEL
from services.rooms.reconcile import reconcile_once
from shared.bus import Bus, connect_bus
from shared.config import Settings
from shared.db import create_pool
from shared.events import Envelope
from shared.events.reconciliation import ParticipantFound, ParticipantPresumedGone
from shared.events.rooms import ParticipantJoined, ParticipantLeft, RoomDeleted, TrackMuted
from tests.billing_support import mediai, new_tenant, usage_totals
from tests.support import eventually, stack_settings, watch
from tests.test_webhooks import Seen, deliver, unique, webhook

pytestmark = pytest.mark.livekit

SERVICES = ("token", "rooms", "webhooks", "billing")


@dataclass
class Private:
    settings: Settings
    stack: Stack
    state: StackState
    bus: Bus
    pool: asyncpg.Pool

    def log(self, part: str) -> Path:
        return self.settings.data_dir / "logs" / f"{part}.log"

    async def stop_webhooks(self) -> None:
        """Stop the webhooks service by its pid: LiveKit's webhooks reach nobody (502)."""
        [part] = [p for p in self.stack.supervisor.parts if p.name == "webhooks" and p.process]
        assert part.process is not None and part.process.returncode is None
        os.killpg(part.process.pid, signal.SIGTERM)
        await asyncio.wait_for(part.process.wait(), 15)

    async def start_webhooks(self) -> None:
        await self.stack.supervisor.start(service_part(self.settings, "webhooks"))


@pytest.fixture(scope="module")
async def private() -> AsyncIterator[Private]:
    data_dir = Path(tempfile.mkdtemp(prefix="mediai-corrections-"))
    settings = stack_settings(data_dir, services=SERVICES, rooms_reconcile_interval=1)
    stack = Stack(settings, services=list(SERVICES))
    state = await stack.start()
    bus = await connect_bus(settings, "tests", streams="create")
    pool = await create_pool(settings)
    try:
        yield Private(settings, stack, state, bus, pool)
    finally:
        await pool.close()
        await bus.close()
        await stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def client(private: Private, key: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=private.state.gateway_url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=15,
    ) as http:
        yield http


@contextlib.asynccontextmanager
async def joined(api: httpx.AsyncClient, room: str, identity: str) -> AsyncIterator[rtc.Room]:
    """A real participant, with a token from POST /v1/tokens (left on exit, if still in)."""
    token = (await api.post("/v1/tokens", json={"room": room, "identity": identity})).json()
    connection = rtc.Room()
    await connection.connect(token["wsUrl"], token["token"])
    try:
        yield connection
    finally:
        await connection.disconnect()


def about(kind: type, room: str, **fields: object) -> Callable[[Envelope], bool]:
    return lambda e: (
        isinstance(e.data, kind)
        and e.data.room == room
        and all(getattr(e.data, k) == v for k, v in fields.items())
    )


async def present(api: httpx.AsyncClient, room: str) -> list[str]:
    answer = await api.get(f"/v1/rooms/{room}/participants")
    return sorted(p["identity"] for p in answer.json().get("participants", []))


async def gave_up(private: Private, event: str, participant_sid: str) -> bool:
    """LiveKit's own log says it gave up delivering this webhook: it failed after its retries,
    or waited in LiveKit's queue past the age LiveKit allows."""
    lines = private.log("livekit").read_text(errors="replace").splitlines()
    return any(
        ("failed to send webhook" in line or "dropped webhook" in line)
        and f'"{event}"' in line
        and participant_sid in line
        for line in lines
    )


def epoch_ms(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def stay_ms(start: datetime, end: datetime) -> int:
    """A stay as billing counts it: integer milliseconds since the epoch, end minus start."""
    return epoch_ms(end) - epoch_ms(start)


def today(settings: Settings) -> dict[str, str]:
    now = datetime.now(ZoneInfo(settings.billing_timezone)).date()
    return {"from": str(now - timedelta(days=1)), "to": str(now + timedelta(days=1))}


async def test_a_dropped_participant_left_is_presumed_folded_and_billed(private: Private) -> None:
    tenant, key = await new_tenant(private.pool, "Corrections clinic")
    room = unique("consult")
    period = today(private.settings)
    kinds = (ParticipantJoined, ParticipantLeft, ParticipantPresumedGone, ParticipantFound)
    async with client(private, key) as api, watch(private.bus, *kinds, tenant=tenant) as stream:
        events = Seen(stream)
        assert (await api.post("/v1/rooms", json={"name": room})).status_code == 201
        async with (
            joined(api, room, "doctor-1") as doctor,
            joined(api, room, "patient-1") as patient,
        ):
            patient_joined = await events.find(about(ParticipantJoined, room, identity="patient-1"))
            assert await eventually(lambda: _present_are(api, room, ["doctor-1", "patient-1"]))
            sid = patient_joined.data.participant_sid
            # The reconciliation has listed the patient since it joined (its last sighting).
            assert await eventually(
                lambda: _sighted_since(private, sid, patient_joined.data.joined_at)
            )

            await private.stop_webhooks()
            async with joined(api, room, "nurse-1") as nurse:  # its join will be lost too
                nurse_sid = nurse.local_participant.sid
                await patient.disconnect()
                left_at = datetime.now(UTC)

                # The reconciliation (every second) publishes what LiveKit's listing shows.
                gone = await events.find(
                    about(ParticipantPresumedGone, room, identity="patient-1"), timeout=30
                )
                found = await events.find(
                    about(ParticipantFound, room, identity="nurse-1"), timeout=30
                )
                assert (gone.data.participant_sid, found.data.participant_sid) == (sid, nurse_sid)
                last_seen = gone.data.last_seen_at
                # Last seen in a listing before the leave, at most a pass or two before it.
                assert patient_joined.data.joined_at < last_seen <= left_at
                assert left_at - last_seen < timedelta(seconds=5)
                assert gone.data.observed_at > last_seen
                # The read model folds both: the patient is gone, the nurse is there.
                assert await eventually(
                    lambda: _present_are(api, room, ["doctor-1", "nurse-1"]), timeout=10
                )
                row = await private.pool.fetchrow(
                    "SELECT left_at, left_by FROM room_participants WHERE sid = $1", sid
                )
                assert (row["left_at"], row["left_by"]) == (last_seen, "reconcile")

                # Billing closes the patient's stay where it was last seen: usage shows it.
                expected = stay_ms(patient_joined.data.joined_at, last_seen)
                assert await eventually(lambda: _billed(api, period, expected), timeout=15)
                report = (await api.get("/v1/usage", params=period)).json()
                assert report["openIntervals"] == 1  # the doctor (the nurse's join was lost)

                # LiveKit really gives up on both webhooks; then the service comes back.
                for event, participant_sid in (
                    ("participant_joined", nurse_sid),
                    ("participant_left", sid),
                ):
                    assert await eventually(
                        lambda e=event, p=participant_sid: gave_up(private, e, p),  # type: ignore[misc]
                        timeout=60,
                        step=0.5,
                    )
                await private.start_webhooks()

            # The nurse's real leave arrives (with its join) and bills it; the doctor's too.
            nurse_left = await events.find(about(ParticipantLeft, room, identity="nurse-1"))
            await doctor.disconnect()
        doctor_left = await events.find(about(ParticipantLeft, room, identity="doctor-1"))

        # A late real participant_left of the patient (as LiveKit would retry it, stamped
        # when the patient left) replaces the presumed end: the stay is not counted twice.
        late = webhook(
            "participant_left",
            room=models.Room(sid=gone.data.room_sid, name=f"{tenant}~{room}"),
            participant=models.ParticipantInfo(
                sid=sid,
                identity="patient-1",
                joined_at_ms=epoch_ms(patient_joined.data.joined_at),
            ),
        )
        late.created_at = int(left_at.timestamp())
        async with httpx.AsyncClient(base_url=private.state.gateway_url, timeout=15) as hooks:
            assert (await deliver(hooks, late, private.state)).status_code == 200
        real = await events.find(about(ParticipantLeft, room, identity="patient-1"))
        assert real.data.left_at >= last_seen

        expected = (
            stay_ms(patient_joined.data.joined_at, real.data.left_at)
            + stay_ms(nurse_left.data.joined_at, nurse_left.data.left_at)
            + stay_ms(doctor_left.data.joined_at, doctor_left.data.left_at)
        )
        assert await eventually(lambda: _billed(api, period, expected), timeout=15)
        assert (await api.get("/v1/usage", params=period)).json()["openIntervals"] == 0
        row = await private.pool.fetchrow(
            "SELECT left_at, left_by FROM room_participants WHERE sid = $1", sid
        )
        assert (row["left_at"], row["left_by"]) == (real.data.left_at, "webhook")

        # The audit by replay of the raw stream agrees with the live usage, to the cent.
        audit = await api.post("/v1/audits", json=period)
        assert audit.status_code == 201, audit.text
        report = audit.json()
        assert report["matches"] is True
        [participants] = [m for m in report["meters"] if m["meter"] == "participant_time"]
        assert participants["replayedQuantity"] == participants["liveQuantity"] == expected
    await _delete(private, key, room)


async def _present_are(api: httpx.AsyncClient, room: str, expected: list[str]) -> bool:
    return await present(api, room) == expected


async def _sighted_since(private: Private, sid: str, moment: datetime) -> bool:
    seen_at = await private.pool.fetchval("SELECT seen_at FROM room_sightings WHERE sid = $1", sid)
    return seen_at is not None and seen_at > moment


async def _billed(api: httpx.AsyncClient, period: dict[str, str], expected: int) -> bool:
    totals = await usage_totals(api, period["from"], period["to"])
    return totals.get("participant_time") == expected


async def _delete(private: Private, key: str, room: str) -> None:
    async with client(private, key) as api:
        await api.delete(f"/v1/rooms/{room}")


async def test_the_read_model_rebuilt_from_the_log_equals_the_live_one(private: Private) -> None:
    tenant, key = await new_tenant(private.pool, "Rebuild clinic")
    room = unique("rebuild")
    kinds = (ParticipantJoined, ParticipantLeft, TrackMuted, RoomDeleted)
    async with (
        client(private, key) as api,
        watch(private.bus, *kinds, tenant=tenant) as stream,
    ):
        events = Seen(stream)
        created = await api.post("/v1/rooms", json={"name": room, "metadata": "triage"})
        assert created.status_code == 201, created.text
        async with joined(api, room, "patient-1") as patient, joined(api, room, "doctor-1"):
            source = rtc.AudioSource(48000, 1)
            publication = await patient.local_participant.publish_track(
                rtc.LocalAudioTrack.create_audio_track("microphone", source),
                rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE),
            )
            assert await eventually(lambda: _present_are(api, room, ["doctor-1", "patient-1"]))
            base = f"/v1/rooms/{room}/participants"

            async def track_known() -> bool:
                # The service asks LiveKit for the track before muting it: LiveKit must have it
                # (its track_published webhook says so).
                view = (await api.get(f"{base}/patient-1")).json()
                return any(t["sid"] == publication.sid for t in view.get("tracks", []))

            assert await eventually(track_known)
            muted = await api.post(
                f"{base}/patient-1/tracks/{publication.sid}/mute", json={"muted": True}
            )
            assert muted.status_code == 200, muted.text
            # Read-your-writes: the read model shows the action at once.
            shown = (await api.get(f"{base}/patient-1")).json()
            assert [t["muted"] for t in shown["tracks"]] == [True]
            updated = await api.patch(f"{base}/doctor-1", json={"metadata": '{"crm":"123"}'})
            assert updated.status_code == 200, updated.text
            assert (await api.get(f"{base}/doctor-1")).json()["metadata"] == '{"crm":"123"}'
            assert (await api.delete(f"{base}/doctor-1")).status_code == 204
            await events.find(about(ParticipantLeft, room, identity="doctor-1"))
            again = await api.post("/v1/rooms", json={"name": room})
            assert again.status_code == 200
        await events.find(about(ParticipantLeft, room, identity="patient-1"))
        assert (await api.delete(f"/v1/rooms/{room}")).status_code == 204
        assert (await api.get(f"/v1/rooms/{room}")).status_code == 404  # read-your-writes
        await events.find(about(RoomDeleted, room))
    await quiet(private)

    code, out, err = await mediai(private.settings, "rooms", "rebuild")
    assert code == 0, out + err
    assert "the live read model matches the rebuilt one" in out
    # The log held this module's whole story: webhooks, actions and findings.
    applied = int(out.split("rebuilt from ")[1].split(" events")[0])
    assert applied > 20

    # A row written behind the projection's back is what the comparison exists to catch.
    sid = await private.pool.fetchval(
        "SELECT sid FROM room_participants WHERE tenant = $1 AND identity = 'doctor-1'", tenant
    )
    await private.pool.execute(
        "UPDATE room_participants SET metadata = 'written by hand' WHERE sid = $1", sid
    )
    code, out, _ = await mediai(private.settings, "rooms", "rebuild")
    assert code == 1
    assert f"DIFFERS room_participants: live only ['{sid}'], rebuilt only ['{sid}']" in out


async def quiet(private: Private) -> None:
    """Wait until everything recorded is in the log and folded (the outbox relayed, the
    read-model consumer with nothing pending) and a reconciliation pass, run after any the
    service has under way, finds nothing more to correct."""

    async def settled() -> bool:
        # The services' rows; a tenant made here is the platform's, which only an operator
        # command relays (mediai up, mediai tenants create).
        pending = await private.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL AND source <> 'mediai/platform'"
        )
        info = await private.bus.js.consumer_info(READ_MODEL.stream, READ_MODEL.durable)
        return pending == 0 and info.num_pending == 0 and info.num_ack_pending == 0

    assert await eventually(settled, timeout=30)
    state = private.state
    livekit = lk.LiveKitAPI(state.livekit_url, state.livekit_api_key, state.livekit_api_secret)
    try:
        assert (
            await reconcile_once(private.pool, livekit, private.bus.phi, settle=timedelta(0)) == []
        )
    finally:
        await livekit.aclose()
    assert await eventually(settled, timeout=30)
