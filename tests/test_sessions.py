"""The session timeline on the real stack: events published on the real NATS (both streams, out
of order), folded by the sessions service into PostgreSQL, read through the gateway with an API
key and with view tokens (scoped, bound, personal parts only when allowed), and followed live."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from opentelemetry import trace

from deploy.stack import StackState
from services.sessions.core import trace_id
from shared.bus import Bus
from shared.events import Envelope, Event
from shared.events.agents import (
    AgentDispatchRequested,
    AgentSessionStarted,
    AgentToolCalled,
    AgentTranscribed,
    AgentUsageReported,
)
from shared.events.clinical import CopilotHintSent, CopilotHintWritten
from shared.events.rooms import ParticipantJoined, ParticipantLeft, RoomFinished, RoomStarted
from shared.tenants import authenticate
from tests.support import eventually

_tracer = trace.get_tracer(__name__)


@pytest.fixture
async def tenant_id(pool: asyncpg.Pool, tenant_key: str) -> str:
    tenant = await authenticate(pool, tenant_key)
    assert tenant is not None
    return tenant.id


async def publish(bus: Bus, data: Event, tenant: str, key: str) -> Envelope:
    """Each event in its own trace, as each step of a real session has one."""
    with _tracer.start_as_current_span("test step"):
        return await bus.publish(data, tenant=tenant, key=key)


class Consultation:
    """One room session with an intake agent and a copilot, as the log tells it."""

    def __init__(self) -> None:
        self.room = f"consulta-{uuid.uuid4().hex[:8]}"
        self.sid = f"RM_{uuid.uuid4().hex[:12]}"
        # Started now: the session list is newest first and other tests' sessions share the
        # tenant, so a session dated in the past would fall off its first page.
        self.t0 = datetime.now(UTC).replace(microsecond=0)
        self.intake = str(uuid.uuid4())
        self.copilot = str(uuid.uuid4())
        # As the worker names them: unique per dispatch (services/agent/worker.py).
        self.agent = f"agent-intake-{self.intake[-12:]}"
        self.copilot_agent = f"agent-copilot-{self.copilot[-12:]}"
        self.hint = str(uuid.uuid4())

    def at(self, seconds: float) -> datetime:
        return self.t0 + timedelta(seconds=seconds)

    def events(self) -> list[tuple[Event, str]]:
        room, sid, d = self.room, self.sid, self.intake
        ids = {"dispatch_id": d, "room": room, "role": "intake"}
        return [
            # The agent's join arrives before its own session_started: linked all the same.
            (
                ParticipantJoined(
                    room=room,
                    participant_sid="PA_a",
                    identity=self.agent,
                    kind="agent",
                    joined_at=self.at(2),
                    room_sid=sid,
                ),
                room,
            ),
            (RoomStarted(room=room, room_sid=sid, started_at=self.at(0)), room),
            (
                ParticipantJoined(
                    room=room,
                    participant_sid="PA_p",
                    identity="paciente-1",
                    joined_at=self.at(1),
                    room_sid=sid,
                    name="Maria Silva",
                    patient_ref="pac-1",
                ),
                room,
            ),
            (
                AgentDispatchRequested(
                    **ids,
                    instructions="Clínica Vida.",
                    requested_at=self.at(1),
                    deadline_at=self.at(11),
                    patient_ref="pac-1",
                ),
                d,
            ),
            (AgentSessionStarted(**ids, agent_identity=self.agent, started_at=self.at(2)), d),
            (
                AgentTranscribed(
                    **ids,
                    segment_id="seg-1",
                    speaker="user",
                    participant_identity="paciente-1",
                    text="Estou com dor de cabeça.",
                    spoken_at=self.at(5),
                    patient_ref="pac-1",
                ),
                d,
            ),
            (
                AgentToolCalled(
                    **ids,
                    call_id="c1",
                    tool="record_answer",
                    duration_seconds=0.02,
                    called_at=self.at(6),
                ),
                d,
            ),
            (
                AgentUsageReported(
                    **ids,
                    period_start=self.at(0),
                    period_end=self.at(15),
                    sequence=1,
                    llm_prompt_tokens=120,
                    llm_completion_tokens=30,
                    session_seconds=15.0,
                ),
                d,
            ),
            # A copilot's hint: its text (PHI stream) before its count (business log).
            (
                CopilotHintWritten(
                    dispatch_id=self.copilot,
                    room=room,
                    hint_id=self.hint,
                    kind="question",
                    text="Pergunte a intensidade.",
                    recipients=["medico-1"],
                    sent_at=self.at(8),
                ),
                self.copilot,
            ),
            (
                AgentDispatchRequested(
                    dispatch_id=self.copilot,
                    room=room,
                    role="copilot",
                    requested_at=self.at(7),
                    deadline_at=self.at(17),
                ),
                self.copilot,
            ),
            (
                AgentSessionStarted(
                    dispatch_id=self.copilot,
                    room=room,
                    role="copilot",
                    agent_identity=self.copilot_agent,
                    started_at=self.at(7.5),
                ),
                self.copilot,
            ),
            (
                ParticipantJoined(
                    room=room,
                    participant_sid="PA_c",
                    identity=self.copilot_agent,
                    kind="agent",
                    joined_at=self.at(7.5),
                    room_sid=sid,
                ),
                room,
            ),
            (
                CopilotHintSent(
                    dispatch_id=self.copilot,
                    room=room,
                    hint_id=self.hint,
                    kind="question",
                    sequence=1,
                    recipients=1,
                    sent_at=self.at(8),
                ),
                self.copilot,
            ),
            (
                ParticipantLeft(
                    room=room,
                    participant_sid="PA_p",
                    identity="paciente-1",
                    left_at=self.at(20),
                    room_sid=sid,
                ),
                room,
            ),
            (RoomFinished(room=room, room_sid=sid, finished_at=self.at(21)), room),
        ]


async def timeline(api: httpx.AsyncClient, session: str, **params: Any) -> dict[str, Any]:
    answer = await api.get(f"/v1/sessions/{session}/timeline", params=params)
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


@pytest.fixture
async def told(
    bus: Bus, tenant_id: str, api: httpx.AsyncClient
) -> tuple[Consultation, dict[str, Envelope]]:
    """A consultation published, and its timeline complete in the projection."""
    c = Consultation()
    published = {}
    for data, key in c.events():
        event = await publish(bus, data, tenant_id, key)
        published[event.id] = event

    expected = {e.id for e in published.values()} - {
        e.id for e in published.values() if isinstance(e.data, CopilotHintSent | CopilotHintWritten)
    } | {f"hint:{c.hint}"}

    async def complete() -> bool:
        answer = await api.get(f"/v1/sessions/{c.sid}/timeline")
        if answer.status_code != 200:
            return False
        entries = {e["key"]: e for e in answer.json()["entries"]}
        hint = entries.get(f"hint:{c.hint}", {"data": {}, "personal": None})
        return expected <= set(entries) and bool(hint["personal"]) and "sequence" in hint["data"]

    await eventually(complete, timeout=20)
    return c, published


async def test_a_room_sessions_timeline_is_told_by_the_log_in_any_order(
    api: httpx.AsyncClient, told: tuple[Consultation, dict[str, Envelope]], settings: Any
) -> None:
    c, published = told
    page = await timeline(api, c.sid)
    session = page["session"]
    assert (session["kind"], session["room"], session["live"]) == ("room", c.room, False)
    assert {(d["id"], d["role"]) for d in session["dispatches"]} == {
        (c.intake, "intake"),
        (c.copilot, "copilot"),
    }
    assert {d["state"] for d in session["dispatches"]} <= {"joined", "failed"}
    # The real dispatcher also reads these dispatches (their deadline long past, it fails them):
    # its entries are in the timeline too; these are the ones of the events published here.
    ours = [e for e in page["entries"] if e["key"] in published or e["key"] == f"hint:{c.hint}"]
    assert len(ours) == 14
    entries = sorted(ours, key=lambda e: (datetime.fromisoformat(e["at"]), e["kind"]))
    assert [e["kind"] for e in entries] == [
        "room_started", "dispatch_requested", "participant_joined", "agent_joined",
        "participant_joined", "transcript", "tool_call", "dispatch_requested", "agent_joined",
        "participant_joined", "hint", "usage", "participant_left", "room_finished",
    ]  # fmt: skip
    by_kind = {e["kind"]: e for e in entries}
    assert by_kind["transcript"]["personal"] == {"text": "Estou com dor de cabeça."}
    assert by_kind["tool_call"]["data"] == {
        "tool": "record_answer", "callId": "c1", "durationSeconds": 0.02, "ok": True,
    }  # fmt: skip
    assert by_kind["usage"]["data"]["quantities"] == {
        "llmPromptTokens": 120, "llmCompletionTokens": 30, "sessionSeconds": 15.0,
    }  # fmt: skip
    # One entry per hint: the count from one stream, the text from the other.
    hint = by_kind["hint"]
    assert hint["data"]["sequence"] == 1 and hint["personal"]["text"] == "Pergunte a intensidade."
    assert hint["key"] == f"hint:{c.hint}"
    # The patient's name is personal; the identity and the patient reference are not.
    joined = [e for e in entries if e["data"].get("identity") == "paciente-1"]
    assert joined[0]["personal"] == {"name": "Maria Silva"}
    assert joined[0]["data"] == {
        "identity": "paciente-1",
        "kind": "standard",
        "patientRef": "pac-1",
    }
    # Each entry links to the trace of the event that made it.
    for entry in entries:
        if entry["kind"] == "hint":
            continue  # two events; the first one's trace
        event = published[entry["key"]]
        assert entry["traceId"] == trace_id(event.traceparent) != ""
        assert entry["traceUrl"] == settings.trace_url(entry["traceId"])

    # By the consultation: its agent's entries and its room session's, not the copilot's.
    consultation = await timeline(api, c.intake)
    assert consultation["session"]["kind"] == "consultation"
    assert consultation["session"]["roomSid"] == c.sid
    kinds = [e["kind"] for e in consultation["entries"] if e["key"] in published]
    assert "hint" not in kinds and "transcript" in kinds and "room_started" in kinds
    assert all(e["dispatchId"] in ("", c.intake) for e in consultation["entries"])

    # Pages by cursor, each entry once.
    first = await timeline(api, c.sid, limit=5)
    second = await timeline(api, c.sid, after=first["cursor"], limit=100)
    assert first["more"] and not second["more"]
    keys = [e["key"] for e in first["entries"] + second["entries"]]
    assert len(keys) == len(set(keys)) and {e["key"] for e in ours} <= set(keys)

    listed = (await api.get("/v1/sessions", params={"live": "false"})).json()["sessions"]
    assert c.sid in [s["id"] for s in listed]


async def view_token(api: httpx.AsyncClient, **body: Any) -> str:
    answer = await api.post("/v1/view-tokens", json=body)
    assert answer.status_code == 201, answer.text
    token: str = answer.json()["token"]
    return token


async def test_view_tokens_read_what_their_view_allows_and_nothing_else(
    api: httpx.AsyncClient,
    stack: StackState,
    told: tuple[Consultation, dict[str, Envelope]],
    other_tenant_key: str,
) -> None:
    c, _ = told
    gateway = stack.gateway_url

    def as_view(token: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=gateway, headers={"Authorization": f"Bearer {token}"})

    clinic = await view_token(api, view="clinic", ttl="5m")
    async with as_view(clinic) as browser:
        page = (await browser.get(f"/v1/sessions/{c.sid}/timeline")).json()
        assert not page["personal"]
        assert all(e["personal"] is None for e in page["entries"])
        assert (await browser.get("/v1/usage")).status_code == 200
        # An operation that takes no view token, even with the key's tenant.
        refused = await browser.delete(f"/v1/agents/{c.intake}")
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "forbidden"
        # A view without personal data cannot hand out one with it.
        wider = await browser.post("/v1/view-tokens", json={"view": "clinic", "personal": True})
        assert wider.status_code == 403

    doctor = await view_token(api, view="doctor", dispatchId=c.intake, room=c.room)
    async with as_view(doctor) as browser:
        page = (await browser.get(f"/v1/sessions/{c.intake}/timeline")).json()
        assert page["personal"]
        said = [e["personal"]["text"] for e in page["entries"] if e["kind"] == "transcript"]
        assert said == ["Estou com dor de cabeça."]
        for path in (
            f"/v1/sessions/{c.sid}/timeline",
            f"/v1/sessions/{c.copilot}/timeline",
            "/v1/sessions",
        ):
            assert (await browser.get(path)).status_code == 403, path
        intake = await browser.post("/v1/agents", json={"room": c.room, "role": "intake"})
        assert intake.status_code == 403
        assert "copilot" in intake.json()["error"]["message"]
        assert (await browser.get("/v1/usage")).status_code == 403

    forged = clinic[:-4] + ("AAAA" if not clinic.endswith("AAAA") else "BBBB")
    async with as_view(forged) as browser:
        answer = await browser.get("/v1/sessions")
        assert answer.status_code == 401
        assert forged not in answer.text
    # Another clinic's key does not find this session.
    async with as_view(other_tenant_key) as other:
        assert (await other.get(f"/v1/sessions/{c.sid}/timeline")).status_code == 404


async def test_the_timeline_streams_what_happens_next(
    api: httpx.AsyncClient, bus: Bus, tenant_id: str, stack: StackState
) -> None:
    c = Consultation()
    await publish(
        bus, RoomStarted(room=c.room, room_sid=c.sid, started_at=c.at(0)), tenant_id, c.room
    )
    await eventually(lambda: _found(api, c.sid))
    first = await timeline(api, c.sid)
    token = await view_token(api, view="clinic", ttl="5m", personal=True)
    headers = {"Authorization": f"Bearer {token}"}
    path = f"/v1/sessions/{c.sid}/timeline/stream"
    async with (
        httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client,
        client.stream("GET", path, params={"after": first["cursor"]}, headers=headers) as lines,
    ):
        assert lines.headers["content-type"].startswith("application/x-ndjson")
        joined = ParticipantJoined(room=c.room, participant_sid="PA_z", identity="paciente-9",
                                   joined_at=c.at(3), room_sid=c.sid)  # fmt: skip
        await publish(bus, joined, tenant_id, c.room)
        async with asyncio.timeout(10):
            async for line in lines.aiter_lines():
                entry = json.loads(line)
                if entry.get("heartbeat"):
                    continue
                assert entry["kind"] == "participant_joined"
                assert entry["data"]["identity"] == "paciente-9"
                assert entry["seq"] > first["cursor"]
                break


async def _found(api: httpx.AsyncClient, session: str) -> bool:
    return (await api.get(f"/v1/sessions/{session}/timeline")).status_code == 200
