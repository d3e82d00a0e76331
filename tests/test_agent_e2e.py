"""Agents end to end on the real stack: POST /v1/agents through the gateway, the dispatcher's own
worker pool running real livekit-agents workers, a real LiveKit room with a patient speaking
real speech, and the OpenAI-compatible stand-in in place of the paid provider."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
import wave
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from livekit import rtc
from nats.js.api import ConsumerConfig, DeliverPolicy

from deploy.stack import StackState
from shared import subjects
from shared.bus import Bus
from shared.config import Settings
from shared.events import CODEC, Envelope, envelope, new_event_id
from shared.events.agents import (
    AgentDispatchFailed,
    AgentDispatchRequested,
    AgentSessionEnded,
    AgentSessionFailed,
    AgentSessionStarted,
    AgentStateChanged,
    AgentTranscribed,
    AgentUsageReported,
    AgentWorkerExited,
    AgentWorkerRegistered,
    AgentWorkerStarted,
)
from shared.naming import SYSTEM_TENANT
from tests.standin import OpenAIStandin
from tests.support import EventStream, until, watch

pytestmark = pytest.mark.livekit

SPEECH = Path(__file__).parent / "data" / "patient-headache.pt-BR.wav"
HEARD = "Estou com dor de cabeça desde segunda-feira."
OPENAI = {
    "stt": "openai/gpt-4o-mini-transcribe",
    "llm": "openai/gpt-4o-mini",
    "tts": "openai/gpt-4o-mini-tts",
}
LOUD = 3000  # peak amplitude that no silence or comfort noise reaches
# Where livekit-agents' session host broadcasts a session (its conversation items, state and
# usage) to everyone in the room, and takes commands from anyone in it: MediAI's sessions must not.
SESSION_HOST_TOPIC = "lk.agent.session"
SESSION_EVENTS = (
    AgentSessionStarted,
    AgentSessionEnded,
    AgentSessionFailed,
    AgentStateChanged,
    AgentUsageReported,
    AgentDispatchFailed,
)


def speech() -> tuple[np.ndarray, int]:
    with wave.open(str(SPEECH)) as recording:
        rate = recording.getframerate()
        return np.frombuffer(recording.readframes(recording.getnframes()), dtype=np.int16), rate


class Participant:
    """A person in a LiveKit room (the rtc SDK): publishes a microphone with real speech,
    records the agents' audio it receives and the text streams sent to it."""

    RATE = 48_000

    def __init__(self, identity: str) -> None:
        self.identity = identity
        self.room = rtc.Room()
        self.source = rtc.AudioSource(self.RATE, 1)
        self.heard: list[tuple[float, str, int]] = []  # (monotonic, sender, peak amplitude)
        self.texts: list[tuple[str, str, str]] = []  # (topic, sender, text)
        self.session_host_senders: list[str] = []  # who sent it a session host's stream
        self._tasks: set[asyncio.Task[Any]] = set()
        self._silent: asyncio.Task[None] | None = None  # the silence after the last words

    @classmethod
    async def join(
        cls,
        api: httpx.AsyncClient,
        room: str,
        identity: str,
        topics: tuple[str, ...] = (),
        role: str = "patient",
    ) -> Participant:
        grant = await api.post(
            "/v1/tokens", json={"room": room, "identity": identity, "role": role}
        )
        assert grant.is_success, grant.text
        person = cls(identity)
        person.room.on("track_subscribed", person._on_track)
        for topic in topics:
            person.room.register_text_stream_handler(topic, person._text_handler(topic))
        person.room.register_byte_stream_handler(
            SESSION_HOST_TOPIC, lambda _, sender: person.session_host_senders.append(sender)
        )
        await person.room.connect(grant.json()["wsUrl"], grant.json()["token"])
        track = rtc.LocalAudioTrack.create_audio_track("microphone", person.source)
        await person.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        return person

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_track(self, track: rtc.Track, _: Any, sender: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            self._spawn(self._listen(track, sender.identity))

    async def _listen(self, track: rtc.Track, sender: str) -> None:
        async for event in rtc.AudioStream(track, sample_rate=self.RATE, num_channels=1):
            samples = np.frombuffer(event.frame.data, dtype=np.int16)
            self.heard.append((time.monotonic(), sender, int(np.abs(samples).max(initial=0))))

    def _text_handler(self, topic: str) -> Callable[[rtc.TextStreamReader, str], None]:
        def handle(reader: rtc.TextStreamReader, sender: str) -> None:
            async def read() -> None:
                self.texts.append((topic, sender, await reader.read_all()))

            self._spawn(read())

        return handle

    async def say(self, pcm: np.ndarray, rate: int, silence_after: float = 3.0) -> float:
        """Speak (real time), then stay silent; returns when the last word left the microphone.
        Speaking again waits for that silence: one microphone, one frame at a time (frames
        captured from two tasks at once fail with ``InvalidState``)."""
        if self._silent is not None:
            await self._silent
        resampler = rtc.AudioResampler(rate, self.RATE, num_channels=1)
        step = rate // 100
        for start in range(0, len(pcm), step):
            piece = pcm[start : start + step]
            for frame in resampler.push(rtc.AudioFrame(piece.tobytes(), rate, 1, len(piece))):
                await self.source.capture_frame(frame)
        for frame in resampler.flush():
            await self.source.capture_frame(frame)
        await self.source.wait_for_playout()
        ended = time.monotonic()
        self._silent = asyncio.create_task(self._silence(silence_after))
        self._tasks.add(self._silent)
        self._silent.add_done_callback(self._tasks.discard)
        return ended

    async def _silence(self, seconds: float) -> None:
        quiet = np.zeros(self.RATE // 100, dtype=np.int16)
        for _ in range(int(seconds * 100)):
            await self.source.capture_frame(
                rtc.AudioFrame(quiet.tobytes(), self.RATE, 1, len(quiet))
            )

    def loud(self, since: float, sender: str | None = None) -> list[float]:
        return [
            t
            for t, who, peak in self.heard
            if t >= since and peak > LOUD and (sender is None or who == sender)
        ]

    async def wait_for_voice(
        self, since: float, sender: str, frames: int = 25, timeout: float = 20.0
    ) -> float:
        """When the first of ``frames`` loud 10 ms frames from ``sender`` arrived."""
        await until(lambda: len(self.loud(since, sender)) >= frames, timeout)
        return self.loud(since, sender)[0]

    async def leave(self) -> None:
        await self.room.disconnect()
        for task in list(self._tasks):
            task.cancel()


async def state_of(
    api: httpx.AsyncClient, dispatch_id: str, state: str, timeout: float = 10.0
) -> dict[str, Any]:
    """The dispatch once the read model shows ``state``."""
    seen: dict[str, Any] = {}

    async def fetch() -> bool:
        nonlocal seen
        seen = (await api.get(f"/v1/agents/{dispatch_id}")).json()
        return seen.get("state") == state

    async with asyncio.timeout(timeout):
        while not await fetch():  # noqa: ASYNC110 - a read model in another process, polled
            await asyncio.sleep(0.05)
    return seen


async def dispatch(api: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await api.post("/v1/agents", json=body)
    assert response.status_code == 202, response.text
    answer: dict[str, Any] = response.json()
    assert answer["state"] == "requested"
    return answer


class Events:
    """The events of a ``watch``, all kept: waiting for one kind never discards another that
    arrived first (two agents start in any order)."""

    def __init__(self, stream: EventStream) -> None:
        self.stream = stream
        self.seen: list[Envelope] = []
        self._taken: set[str] = set()

    async def next(
        self,
        kind: type,
        dispatch_id: str | None = None,
        where: Callable[[Any], bool] = lambda _: True,
        timeout: float = 20.0,
    ) -> Any:
        """The data of the first event of ``kind`` (about ``dispatch_id``) not returned yet."""

        def wanted(event: Envelope) -> bool:
            data = event.data
            return (
                event.id not in self._taken
                and isinstance(data, kind)
                and (dispatch_id is None or getattr(data, "dispatch_id", "") == dispatch_id)
                and where(data)
            )

        async with asyncio.timeout(timeout):
            checked = 0
            while True:
                for event in self.seen[checked:]:
                    if wanted(event):
                        self._taken.add(event.id)
                        return event.data
                checked = len(self.seen)
                self.seen.append(await self.stream.next(timeout=timeout))

    def all(self, kind: type, dispatch_id: str) -> list[Any]:
        """Every event of ``kind`` about ``dispatch_id`` received so far."""
        self.seen.extend(self.stream.drain())
        return [
            e.data
            for e in self.seen
            if isinstance(e.data, kind) and getattr(e.data, "dispatch_id", "") == dispatch_id
        ]


@asynccontextmanager
async def following(bus: Bus, *kinds: type) -> AsyncIterator[Events]:
    async with watch(bus, *kinds) as stream:
        yield Events(stream)


def spoken(standin: OpenAIStandin) -> str:
    """Everything the agents had synthesized, in order (the TTS is asked sentence by sentence)."""
    return " ".join(r["body"]["input"] for r in standin.requests("speech"))


def new_room() -> str:
    return f"consult-{uuid.uuid4().hex[:8]}"


async def registered_workers(bus: Bus, within: float = 120.0) -> set[str]:
    """The pool's workers registered with LiveKit and alive, once there is at least one (the
    stack is ready before its first worker has finished starting)."""
    registered: set[str] = set()
    exited: set[str] = set()
    arrived = asyncio.Event()

    async def on_message(message: Any) -> None:
        data = CODEC.decode(message.data).data
        if isinstance(data, AgentWorkerRegistered):
            registered.add(data.worker_id)
        elif isinstance(data, AgentWorkerExited):
            exited.add(data.worker_id)
        if registered - exited:
            arrived.set()

    subscriptions = [
        await bus.js.subscribe(
            subjects.type_filter(kind, SYSTEM_TENANT),
            cb=on_message,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        )
        for kind in (AgentWorkerRegistered, AgentWorkerExited)
    ]
    try:
        await asyncio.wait_for(arrived.wait(), within)
    finally:
        for subscription in subscriptions:
            await subscription.unsubscribe()
    return registered - exited


@pytest.fixture
async def standin(openai_standin: OpenAIStandin, bus: Bus) -> OpenAIStandin:
    await registered_workers(bus)
    openai_standin.reset()
    return openai_standin


# ---------------------------------------------------------------------------------------------


async def test_an_agent_joins_listens_answers_is_commanded_and_ends(
    api: httpx.AsyncClient, bus: Bus, standin: OpenAIStandin
) -> None:
    answer = "Entendi, dor de cabeça desde segunda-feira. A dor é forte?"
    second_answer = "Certo. Vou avisar o médico."
    standin.transcript_default(HEARD)
    standin.chat(
        "dor de cabeça",
        text=answer,
        once=True,
        usage={"prompt_tokens": 120, "completion_tokens": 12, "cached_tokens": 20},
    )
    standin.chat(
        system="Consulte sempre o protocolo B",
        text=second_answer,
        usage={"prompt_tokens": 200, "completion_tokens": 6},
    )
    room = new_room()
    patient = await Participant.join(api, room, "patient-1")
    pcm, rate = speech()
    async with (
        following(bus, *SESSION_EVENTS) as events,
        following(bus, AgentTranscribed, AgentUsageReported) as said,
    ):
        asked = time.monotonic()
        created = await dispatch(
            api, room=room, role="generic", instructions="Você atende a Clínica Teste.", **OPENAI
        )
        dispatch_id = created["id"]
        started = await events.next(AgentSessionStarted, dispatch_id)
        joined = await state_of(api, dispatch_id, "joined")
        assert joined["agentIdentity"] == started.agent_identity
        assert (joined["role"], joined["llm"]) == ("generic", "openai/gpt-4o-mini")
        assert (started.stt, started.tts) == (OPENAI["stt"], OPENAI["tts"])
        await until(lambda: started.agent_identity in patient.room.remote_participants, 10)
        agent = patient.room.remote_participants[started.agent_identity]
        assert agent.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        assert agent.attributes["mediai.role"] == "generic"
        print(f"POST /v1/agents -> joined: {started.started_at} ({time.monotonic() - asked:.2f}s)")
        await events.next(AgentStateChanged, dispatch_id)  # ready: listening

        # The patient speaks; the agent transcribes, answers, and the patient hears it.
        spoke = await patient.say(pcm, rate)
        first_voice = await patient.wait_for_voice(spoke, started.agent_identity)
        print(f"end of speech -> first agent audio: {first_voice - spoke:.2f}s")
        upload = standin.requests("transcription")[0]["audio"]
        assert upload["rms"] > 500 and 2.5 < upload["duration"] < 8  # the real speech arrived
        chat = standin.requests("chat")[0]["body"]
        system = chat["messages"][0]["content"]
        assert "Você atende a Clínica Teste." in system and "assistente de voz" in system
        assert chat["messages"][-1] == {"role": "user", "content": HEARD}
        assert spoken(standin) == answer  # sentence by sentence
        user_said = await said.next(
            AgentTranscribed, dispatch_id, where=lambda d: d.speaker == "user"
        )
        agent_said = await said.next(
            AgentTranscribed, dispatch_id, where=lambda d: d.speaker == "agent"
        )
        assert (user_said.speaker, user_said.participant_identity, user_said.text) == (
            "user",
            "patient-1",
            HEARD,
        )
        assert (agent_said.speaker, agent_said.text) == ("agent", answer)
        # The conversation reached the patient as speech and transcript only: no session host
        # broadcast it (it would send every participant what everyone said, and obey them).
        assert patient.session_host_senders == []

        # Commands by dispatch id: new instructions for the next turn, and words to say now.
        response = await api.post(
            f"/v1/agents/{dispatch_id}/commands",
            json={"command": "update_instructions", "text": "Consulte sempre o protocolo B."},
        )
        assert response.status_code == 202, response.text
        spoke = await patient.say(pcm, rate)
        await patient.wait_for_voice(spoke, started.agent_identity)
        assert standin.requests("chat")[-1]["reply"]["text"] == second_answer
        announcement = "O médico vai entrar em instantes."
        commanded = time.monotonic()
        response = await api.post(
            f"/v1/agents/{dispatch_id}/commands", json={"command": "say", "text": announcement}
        )
        assert response.status_code == 202, response.text
        await until(lambda: spoken(standin).endswith(announcement), 10)
        # Let the patient hear it all (the stand-in's tone lasts 0.06 s a character) before
        # ending, or the goodbye interrupts it and less audio is synthesized than requested.
        await patient.wait_for_voice(
            commanded, started.agent_identity, frames=int(len(announcement) * 6 * 0.9)
        )

        # Ending: goodbye, final usage, ended; the dispatch shows it.
        assert (await api.delete(f"/v1/agents/{dispatch_id}")).status_code == 202
        ended = await events.next(AgentSessionEnded, dispatch_id)
        assert ended.reason == "end_requested"
        goodbye = "Obrigado pela conversa. Até logo!"
        assert spoken(standin).endswith(goodbye)
        final = await state_of(api, dispatch_id, "ended")
        assert final["reason"] == "end_requested" and final["endedAt"]
        await said.next(AgentUsageReported, dispatch_id, where=lambda d: d.final)
        reports = said.all(AgentUsageReported, dispatch_id)
    await patient.leave()

    assert (
        reports
        and reports[-1].final
        and [r.sequence for r in reports] == list(range(1, len(reports) + 1))
    )
    total = {
        name: sum(getattr(r, name) for r in reports)
        for name in (
            "llm_prompt_tokens",
            "llm_completion_tokens",
            "llm_cached_tokens",
            "tts_characters",
            "tts_audio_seconds",
            "stt_audio_seconds",
            "session_seconds",
        )
    }
    assert total["llm_prompt_tokens"] == 120 + 200
    assert total["llm_completion_tokens"] == 12 + 6
    assert total["llm_cached_tokens"] == 20
    # What the agent reports is what the provider was asked for.
    synthesized = standin.requests("speech")
    assert spoken(standin) == " ".join([answer, second_answer, announcement, goodbye])
    assert total["tts_characters"] == sum(len(r["body"]["input"]) for r in synthesized)
    assert total["tts_audio_seconds"] == pytest.approx(
        sum(r["reply"]["seconds"] for r in synthesized), abs=0.3
    )
    assert 2 * 2.5 < total["stt_audio_seconds"] < 2 * 8
    assert total["session_seconds"] == pytest.approx(ended.duration_seconds, abs=1.0)
    assert {r.llm_model for r in reports} == {"openai/gpt-4o-mini"}


async def test_two_agents_of_different_roles_share_a_room(
    api: httpx.AsyncClient, bus: Bus, standin: OpenAIStandin
) -> None:
    """An intake agent talks with the patient while a copilot writes only to the doctor."""
    standin.transcript_default(HEARD)
    standin.chat(system="assistente de triagem", text="Entendi. Quando a dor começou?")
    standin.chat(system="copiloto do médico", text="Pergunte a intensidade da dor, de 0 a 10.")
    room = new_room()
    hints = "mediai.copilot.hints"
    patient = await Participant.join(api, room, "patient-7", topics=(hints,))
    doctor = await Participant.join(api, room, "doctor-ana", topics=(hints,), role="doctor")
    async with following(bus, *SESSION_EVENTS) as events:
        intake, copilot = await asyncio.gather(
            dispatch(api, room=room, role="intake", participant="patient-7", **OPENAI),
            dispatch(api, room=room, role="copilot", participant="patient-7", **OPENAI),
        )
        intake_started = await events.next(AgentSessionStarted, intake["id"])
        copilot_started = await events.next(AgentSessionStarted, copilot["id"])
        assert intake_started.agent_identity != copilot_started.agent_identity
        listed = (await api.get("/v1/agents", params={"room": room})).json()
        assert {d["role"] for d in listed} == {"intake", "copilot"}
        await until(
            lambda: (
                {intake_started.agent_identity, copilot_started.agent_identity}
                <= set(patient.room.remote_participants)
            ),
            10,
        )
        await state_of(api, copilot["id"], "joined")

        spoke = await patient.say(*speech())
        await patient.wait_for_voice(spoke, intake_started.agent_identity)
        await until(lambda: doctor.texts, 20)
        assert doctor.texts == [
            (hints, copilot_started.agent_identity, "Pergunte a intensidade da dor, de 0 a 10.")
        ]
        copilot_agent = patient.room.remote_participants[copilot_started.agent_identity]
        assert not copilot_agent.track_publications  # a text-only role publishes no audio
        assert not doctor.loud(spoke, copilot_started.agent_identity)
        assert patient.texts == []  # the hints never reach the patient

        for created in (intake, copilot):
            assert (await api.delete(f"/v1/agents/{created['id']}")).status_code == 202
        for created in (intake, copilot):
            await state_of(api, created["id"], "ended", timeout=25)
    await patient.leave()
    await doctor.leave()


async def test_an_agent_leaves_when_the_room_empties(
    api: httpx.AsyncClient, bus: Bus, standin: OpenAIStandin
) -> None:
    room = new_room()
    patient = await Participant.join(api, room, "patient-3")
    async with following(bus, *SESSION_EVENTS) as events:
        created = await dispatch(api, room=room, role="generic", **OPENAI)
        await events.next(AgentSessionStarted, created["id"])
        await patient.leave()
        ended = await events.next(AgentSessionEnded, created["id"])
        final = await events.next(AgentUsageReported, created["id"], where=lambda d: d.final)
    assert ended.reason == "room_empty"
    assert final.session_seconds > 0
    assert (await state_of(api, created["id"], "ended"))["reason"] == "room_empty"
    assert standin.requests("speech") == []  # no goodbye to an empty room


async def test_missing_provider_credentials_fail_the_job_with_a_clear_event(
    api: httpx.AsyncClient, bus: Bus, settings: Settings, standin: OpenAIStandin
) -> None:
    if os.environ.get("GOOGLE_API_KEY"):
        pytest.skip("GOOGLE_API_KEY is set: the google provider is usable here")
    room = new_room()
    async with following(bus, *SESSION_EVENTS) as events:
        created = await dispatch(api, room=room, role="intake")  # the default models: google
        failed = await events.next(AgentSessionFailed, created["id"])
    assert failed.reason == "missing_credentials"
    assert failed.detail == "provider google: GOOGLE_API_KEY is not set"
    shown = await state_of(api, created["id"], "failed")
    assert (shown["reason"], shown["detail"]) == ("missing_credentials", failed.detail)
    # ... and the worker said so in one line when it started.
    logs = "".join(p.read_text() for p in (settings.data_dir / "logs").glob("agent-worker-*.log"))
    assert "provider google unavailable: GOOGLE_API_KEY is not set" in logs


async def test_requests_are_validated_listing_the_valid_choices(
    api: httpx.AsyncClient, stack: StackState, other_tenant_key: str
) -> None:
    response = await api.post("/v1/agents", json={"room": "r1", "role": "surgeon"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "unknown_role"
    assert error["details"] == [
        {"field": "role", "valid": ["copilot", "generic", "intake", "receptionist"]}
    ]
    response = await api.post("/v1/agents", json={"room": "r1", "llm": "gpt-99"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "unknown_model"
    assert "openai/gpt-4o-mini" in response.json()["error"]["details"][0]["valid"]
    response = await api.post(
        "/v1/agents",
        json={"room": "r1", "role": "intake", "instructionsMode": "replace", "instructions": "x"},
    )
    assert response.json()["error"]["code"] == "instructions_not_allowed"
    response = await api.post("/v1/agents", json={"room": "not a room"})
    assert response.status_code == 400
    async with httpx.AsyncClient(base_url=stack.gateway_url) as anonymous:
        assert (await anonymous.post("/v1/agents", json={"room": "r1"})).status_code == 401
    created = await dispatch(api, room=new_room(), role="generic", **OPENAI)
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {other_tenant_key}"}
    ) as other:
        assert (await other.get(f"/v1/agents/{created['id']}")).status_code == 404
        assert (await other.delete(f"/v1/agents/{created['id']}")).status_code == 404
    # Nobody is in that room: cancelling before the agent is there ends the dispatch.
    await api.delete(f"/v1/agents/{created['id']}")
    final = (await api.get(f"/v1/agents/{created['id']}")).json()
    assert final["state"] in ("ended", "joined")


async def test_a_dispatch_nobody_takes_in_time_fails_with_a_reason(
    api: httpx.AsyncClient, bus: Bus, pool: Any
) -> None:
    """Never silently pending: the deadline passes, the dispatch fails with no_worker."""
    tenant = await pool.fetchval("SELECT id FROM tenants ORDER BY created_at LIMIT 1")
    now = datetime.now(UTC)
    request = AgentDispatchRequested(
        dispatch_id=new_event_id(),
        room=new_room(),
        role="generic",
        language="pt-BR",
        requested_at=now - timedelta(seconds=11),
        deadline_at=now - timedelta(seconds=1),
        **OPENAI,
    )
    async with following(bus, AgentDispatchFailed) as failures:
        await bus.publish(request, tenant=tenant, key=request.dispatch_id)
        failed = await failures.next(AgentDispatchFailed, request.dispatch_id)
    assert failed.reason == "no_worker"
    assert "within" in failed.detail
    shown = await state_of(api, request.dispatch_id, "failed")
    assert shown["reason"] == "no_worker"


def alive_in_group(pgid: int) -> list[int]:
    """Processes of a process group that are still running (not zombies)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(stat.parent.name))
    return alive


async def last_event(bus: Bus, kind: type, key: str) -> Envelope:
    """The last event of a type about one key, read back from the stream."""
    got: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()

    async def on_message(message: Any) -> None:
        if not got.done():
            got.set_result(CODEC.decode(message.data))

    subscription = await bus.js.subscribe(
        subjects.key_filter(kind, tenant=SYSTEM_TENANT, key=key),
        cb=on_message,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT),
    )
    try:
        return await asyncio.wait_for(got, 10)
    finally:
        await subscription.unsubscribe()


async def test_a_killed_worker_is_replaced_and_its_session_fails_with_a_reason(
    api: httpx.AsyncClient, bus: Bus, standin: OpenAIStandin
) -> None:
    """SIGKILL mid-session: the pool restarts a worker (event), the dispatch fails with
    ``worker_lost`` (it is not re-dispatched: a new agent would not know what was said), and a
    new dispatch works again."""
    standin.transcript_default(HEARD)
    room = new_room()
    patient = await Participant.join(api, room, "patient-9")
    async with (
        following(bus, *SESSION_EVENTS) as events,
        following(bus, AgentWorkerExited, AgentWorkerStarted, AgentWorkerRegistered) as pool,
    ):
        created = await dispatch(api, room=room, role="generic", **OPENAI)
        started = await events.next(AgentSessionStarted, created["id"])
        await state_of(api, created["id"], "joined")
        worker = (await last_event(bus, AgentWorkerStarted, started.worker_id)).data
        os.kill(worker.pid, signal.SIGKILL)

        exited = await pool.next(
            AgentWorkerExited, where=lambda d: d.worker_id == started.worker_id
        )
        assert (exited.signal, exited.expected) == (signal.SIGKILL, False)
        assert exited.restart_delay_seconds is not None
        failed = await events.next(AgentDispatchFailed, created["id"])
        assert failed.reason == "worker_lost" and "signal 9" in failed.detail
        # Its job processes died with it (no orphan keeps talking in the room; LiveKit itself
        # drops the vanished participant about 20 s later).
        await until(lambda: not alive_in_group(worker.pid), 10)
        shown = await state_of(api, created["id"], "failed")
        assert shown["reason"] == "worker_lost"
        replacement = await pool.next(AgentWorkerStarted, where=lambda d: d.reason == "restart")
        await pool.next(
            AgentWorkerRegistered, where=lambda d: d.worker_id == replacement.worker_id, timeout=60
        )

        again = await dispatch(api, room=room, role="generic", **OPENAI)
        rejoined = await events.next(AgentSessionStarted, again["id"], timeout=30)
        assert rejoined.worker_id == replacement.worker_id
        assert (await api.delete(f"/v1/agents/{again['id']}")).status_code == 202
        await state_of(api, again["id"], "ended", timeout=25)
    await patient.leave()


def test_metadata_is_the_event_itself() -> None:
    """What LiveKit carries to the worker decodes as the dispatch's own event."""
    now = datetime.now(UTC)
    request = AgentDispatchRequested(
        dispatch_id="d", room="r", role="generic", requested_at=now, deadline_at=now, **OPENAI
    )
    document = CODEC.encode(
        envelope(request, source="mediai/dispatcher", tenant="tabcdefghij", subject="d")
    )
    assert CODEC.decode(document).data == request
