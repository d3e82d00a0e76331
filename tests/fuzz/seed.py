"""What the API fuzzer cannot make by itself, made through the API before it runs: a doctor who
has free slots, an appointment, and a room with a real participant publishing a track.

The fuzzer draws a path parameter from these (half the time, in valid requests only: a
schemathesis dictionary) so the operations on a doctor, an appointment or a participant get
past their 404 to the code behind it. Random doctors have no free slots, and participants only
exist by joining with LiveKit's SDK, which no HTTP request does.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from livekit import rtc

from tests.support import eventually

ALL_DAY = [
    {"day": day, "start": "00:00", "end": "23:30"}
    for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
]
ROOM = "fuzz-room"
IDENTITY = "fuzz-patient"
# The share of valid requests that use a seeded value for a parameter of that name.
PROBABILITY = 0.5


def _ok(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code in (200, 201), answer.text
    body: dict[str, Any] = answer.json()
    return body


async def _doctor_and_appointment(api: httpx.AsyncClient) -> dict[str, str]:
    doctor = _ok(
        await api.post(
            "/v1/doctors",
            json={
                "name": "Dra. Fuzz",
                "specialty": "Clínica geral",
                "city": "São Paulo",
                "schedule": {"timezone": "America/Sao_Paulo", "slotMinutes": 30, "weekly": ALL_DAY},
            },
        )
    )
    slots = _ok(await api.get(f"/v1/doctors/{doctor['id']}/slots", params={"limit": 1}))
    booked = {"doctorId": doctor["id"], "startsAt": slots["slots"][0]["startsAt"]}
    appointment = _ok(await api.post("/v1/appointments", json={**booked, "patientRef": "p-fuzz"}))
    return {"doctor_id": doctor["id"], "appointment_id": appointment["id"]}


@contextlib.asynccontextmanager
async def seeded(api: httpx.AsyncClient) -> AsyncIterator[dict[str, str]]:
    """The seeded path parameters (name -> value), while the participant stays connected."""
    values = await _doctor_and_appointment(api)
    _ok(await api.post("/v1/rooms", json={"name": ROOM, "emptyTimeout": 3600}))
    token = _ok(await api.post("/v1/tokens", json={"room": ROOM, "identity": IDENTITY}))
    connection = rtc.Room()
    await connection.connect(token["wsUrl"], token["token"])
    try:
        source = rtc.AudioSource(48000, 1)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
        publication = await connection.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )

        async def listed() -> bool:
            answer = await api.get(f"/v1/rooms/{ROOM}/participants/{IDENTITY}")
            tracks = answer.json().get("tracks", []) if answer.status_code == 200 else []
            return publication.sid in [t.get("sid") for t in tracks]

        assert await eventually(listed, timeout=20), "the seeded participant never showed"
        yield {**values, "name": ROOM, "identity": IDENTITY, "track_sid": publication.sid}
    finally:
        await connection.disconnect()


def dictionaries(values: dict[str, str]) -> str:
    """TOML for the fuzzer's settings: one dictionary per seeded path parameter, bound to it."""
    lines = []
    for name, value in values.items():
        lines += [f"[dictionaries.{name}]", f"values = [{json.dumps(value)}]", ""]
    lines.append("[parameters]")
    for name in values:
        lines.append(f'"path.{name}" = {{ dictionary = "{name}", probability = {PROBABILITY} }}')
    return "\n".join(lines) + "\n"
