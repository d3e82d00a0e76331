"""Recorded consultations end to end with MediAI's recorder on the real stack: two people in a
real LiveKit room speaking real speech, a recording asked through /v1/egress, started only once
the patient's consent is on the log, stopped through the API or by a withdrawal; the file opened
with the patient's clinical key and read back with PyAV; the minutes billed."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import av
import httpx
import numpy as np
import pytest

from deploy.stack import StackState
from services.recorder.recordings import recordings_dir
from services.recorder.sealed_file import key_id_of, read_sealed
from shared.bus import Bus
from shared.config import Settings
from shared.events.clinical import ConsentGiven, ConsentRefused
from shared.events.recordings import RecordingStored
from shared.events.rooms import EgressEnded, EgressStarted
from shared.tenants import create_tenant
from tests.support import EventStream, eventually, until, watch
from tests.test_agent_e2e import LOUD, Participant, speech

pytestmark = pytest.mark.livekit

RECORDED = (EgressStarted, EgressEnded, RecordingStored)
BLOCK_SECONDS = 0.02


class Clinic:
    """A fresh tenant (so its usage is its own), its API client, and its room."""

    def __init__(self, tenant: str, api: httpx.AsyncClient) -> None:
        self.tenant, self.api = tenant, api
        self.room = f"consulta-{uuid.uuid4().hex[:8]}"
        self.dispatch_id = f"d-{uuid.uuid4().hex[:8]}"
        self.patient_ref = f"pac-{uuid.uuid4().hex[:6]}"

    async def record(self) -> dict[str, Any]:
        answer = await self.api.post(
            "/v1/egress/start", json={"room": self.room, "output": "ogg", "backend": "recorder"}
        )
        assert answer.status_code == 201, answer.text
        view: dict[str, Any] = answer.json()
        assert (view["backend"], view["status"]) == ("recorder", "starting")
        return view

    async def consent(self, bus: Bus, event: type[ConsentGiven] | type[ConsentRefused]) -> None:
        """The patient's answer, as the agent publishes it (services/agent/consent.py)."""
        common = {
            "dispatch_id": self.dispatch_id,
            "room": self.room,
            "role": "intake",
            "recording": True,
            "wording": "consent-pt-BR-2026-01",
            "patient_ref": self.patient_ref,
        }
        now = datetime.now(UTC)
        data = (
            ConsentGiven(**common, given_at=now)
            if event is ConsentGiven
            else ConsentRefused(**common, refused="recording", refused_at=now)
        )
        await bus.publish(data, tenant=self.tenant, key=self.dispatch_id)


@pytest.fixture
async def clinic(stack: StackState, pool: asyncpg.Pool) -> AsyncIterator[Clinic]:
    async with pool.acquire() as conn:
        tenant, key = await create_tenant(conn, "Recording clinic")
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
    ) as api:
        made = Clinic(tenant.id, api)
        assert (await api.post("/v1/rooms", json={"name": made.room})).status_code == 201
        yield made


async def next_of(events: EventStream, kind: type[Any], egress_id: str) -> Any:
    found = await events.wait_for(
        lambda e: isinstance(e.data, kind) and e.data.egress_id == egress_id, timeout=30
    )
    return found.data


def loud_blocks(samples: np.ndarray, rate: int) -> np.ndarray:
    """Start times (s) of the 20 ms blocks whose peak is loud."""
    size = int(rate * BLOCK_SECONDS)
    blocks = np.abs(samples[: len(samples) // size * size].astype(np.int32)).reshape(-1, size)
    return np.flatnonzero(blocks.max(axis=1) > LOUD) * BLOCK_SECONDS


async def opened(bus: Bus, settings: Settings, tenant: str, stored: RecordingStored) -> bytes:
    path = recordings_dir(settings) / stored.file
    sealed = path.read_bytes()
    assert b"OggS" not in sealed  # nothing in clear at rest
    key = await bus.phi.keys.for_opening(tenant, key_id_of(path))
    assert key is not None and (key.purpose, key.patient_ref) == ("clinical", stored.patient_ref)
    return read_sealed(path, key, stored.egress_id)


async def test_a_consented_consultation_is_recorded_with_both_voices_and_billed(
    clinic: Clinic, bus: Bus, settings: Settings
) -> None:
    pcm, rate = speech()
    patient = await Participant.join(clinic.api, clinic.room, "paciente-1")
    doctor = await Participant.join(clinic.api, clinic.room, "medico-1", role="doctor")
    try:
        async with watch(bus, *RECORDED, tenant=clinic.tenant) as events:
            egress_id = (await clinic.record())["egressId"]
            # The recorder is in the room, hidden: LiveKit shows the room as recorded, which is
            # what makes the agent ask for consent to the recording (services/agent/consent.py).
            await until(lambda: patient.room.is_recording, timeout=30)
            assert set(patient.room.remote_participants) == {"medico-1"}
            # No consent yet: the patient speaks, and nothing is recorded.
            await patient.say(pcm, rate, silence_after=0.5)
            assert [e for e in events.drain() if e.data.egress_id == egress_id] == []
            await clinic.consent(bus, ConsentGiven)
            started = await next_of(events, EgressStarted, egress_id)
            await patient.say(pcm, rate, silence_after=2.5)
            # The doctor answers after a two-second pause (silence on the microphone).
            pause = np.zeros(2 * rate, dtype=np.int16)
            await doctor.say(np.concatenate([pause, pcm]), rate, silence_after=1.0)
            stop = await clinic.api.post(f"/v1/egress/{egress_id}/stop")
            assert stop.status_code == 200, stop.text
            stored = await next_of(events, RecordingStored, egress_id)
            ended = await next_of(events, EgressEnded, egress_id)
    finally:
        await patient.leave()
        await doctor.leave()
    assert (ended.status, stored.ended_by, stored.dispatch_id) == (
        "complete",
        "stopped",
        clinic.dispatch_id,
    )
    wall = (ended.ended_at - started.started_at).total_seconds()

    container = av.open(io.BytesIO(await opened(bus, settings, clinic.tenant, stored)))
    audio = container.streams.audio[0]
    assert (audio.codec_context.name, audio.rate, container.format.name) == ("opus", 48000, "ogg")
    samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio)])
    samples = (samples * 32767).astype(np.int16) if samples.dtype.kind == "f" else samples
    duration = len(samples) / 48000
    assert abs(duration - wall) < 0.5 and abs(duration - stored.duration_ms / 1000) < 0.1
    # Two utterances, one per voice, each as long as the speech, a pause between them.
    spoken = loud_blocks(pcm, rate)
    heard = loud_blocks(samples, 48000)
    gap = int(np.argmax(np.diff(heard)))
    first, second = heard[: gap + 1], heard[gap + 1 :]
    assert np.diff(heard)[gap] > 1.5
    # Each about as long as the speech. On a loaded machine (the shared CI host runs at load
    # 15-20) WebRTC conceals late packets with quieter audio, so fewer blocks are loud than in
    # the WAV and an utterance may lose its edges; one voice alone could not pass both.
    for utterance in (first, second):
        span, speech_span = utterance[-1] - utterance[0], spoken[-1] - spoken[0]
        assert 0.5 * speech_span < span < speech_span + 0.75, (span, speech_span)
        assert len(utterance) > 0.4 * len(spoken), (len(utterance), len(spoken))

    listed = (
        await clinic.api.get("/v1/egress", params={"consultation": clinic.dispatch_id})
    ).json()
    [row] = listed["egress"]
    assert row["egressId"] == egress_id and row["recording"]["file"] == stored.file
    assert row["recording"]["patientRef"] == clinic.patient_ref
    assert row["recording"]["retainUntil"] is not None

    async def metered() -> int:
        window = {
            "from": (started.started_at - timedelta(minutes=1)).isoformat(),
            "to": (ended.ended_at + timedelta(minutes=1)).isoformat(),
        }
        report = await clinic.api.get("/v1/usage", params=window)
        totals = {r["meter"]: r["quantity"] for r in report.json()["rows"]}
        return int(totals.get("egress_time", 0))

    billed_ms = await eventually(metered, timeout=20)
    assert abs(billed_ms - wall * 1000) < 1000


async def test_withdrawn_consent_ends_the_recording_and_refusal_records_nothing(
    clinic: Clinic, bus: Bus, settings: Settings
) -> None:
    pcm, rate = speech()
    patient = await Participant.join(clinic.api, clinic.room, "paciente-2")
    try:
        async with watch(bus, *RECORDED, tenant=clinic.tenant) as events:
            refused_id = (await clinic.record())["egressId"]
            await clinic.consent(bus, ConsentRefused)
            never = await next_of(events, EgressEnded, refused_id)
            assert (never.status, never.error, never.started_at) == (
                "aborted",
                "consent_refused",
                None,
            )

            egress_id = (await clinic.record())["egressId"]
            await clinic.consent(bus, ConsentGiven)
            await next_of(events, EgressStarted, egress_id)
            await patient.say(pcm, rate, silence_after=0.5)
            await clinic.consent(bus, ConsentRefused)
            stored = await next_of(events, RecordingStored, egress_id)
            ended = await next_of(events, EgressEnded, egress_id)
            assert [e.data for e in events.drain() if isinstance(e.data, RecordingStored)] == []
    finally:
        await patient.leave()
    assert (ended.status, ended.error, stored.ended_by) == (
        "aborted",
        "consent_withdrawn",
        "consent_withdrawn",
    )
    # What was recorded under consent is kept, and it reads.
    container = av.open(io.BytesIO(await opened(bus, settings, clinic.tenant, stored)))
    assert container.streams.audio[0].codec_context.name == "opus"
    assert not (
        recordings_dir(settings) / clinic.tenant / clinic.room / f"{refused_id}.ogg.sealed"
    ).exists()
