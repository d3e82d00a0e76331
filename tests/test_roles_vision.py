"""Vision in a real LiveKit room: ``look_at_patient`` takes one frame of the patient's synthetic
camera (an ``rtc.VideoSource`` track) and gives it to the model as an image; without a camera
the tool tells the model; on demand the camera is subscribed only while looking (so video is
metered only then); with vision off the tool is not offered."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import msgspec
import numpy as np
import pytest
from livekit import rtc
from livekit.agents import llm

from services.agent import vision
from services.agent.medical import tools_of
from services.agent.session import VideoClock
from shared.bus import Bus
from shared.config import Settings
from shared.tenants import authenticate
from tests.roles_support import consultation, session_on, tag
from tests.standin import OpenAIStandin
from tests.support import until

pytestmark = pytest.mark.livekit
CONSENT = "Agora: consentimento"


@pytest.fixture
async def tenant_id(pool: asyncpg.Pool, tenant_key: str) -> str:
    tenant = await authenticate(pool, tenant_key)
    assert tenant is not None
    return tenant.id


@pytest.fixture
def standin(openai_standin: OpenAIStandin) -> OpenAIStandin:
    openai_standin.reset()
    openai_standin.chat(
        "concordo", system=CONSENT, tool_calls=[("record_consent", {"ai_assistance": True})]
    )
    # After the tool, the conversation ends with the camera frame (a user message with the image).
    openai_standin.chat("Imagem da câmera do paciente", text="Vejo uma área avermelhada no braço.")
    openai_standin.chat("olha", tool_calls=[("look_at_patient", {"question": "a mancha"})])
    openai_standin.chat(after_tool="look_at_patient", text="Não consegui ver.")
    return openai_standin


async def joined(
    api: httpx.AsyncClient, room: str, identity: str, auto_subscribe: bool = True
) -> rtc.Room:
    grant = await api.post("/v1/tokens", json={"room": room, "identity": identity})
    assert grant.is_success, grant.text
    person = rtc.Room()
    await person.connect(
        grant.json()["wsUrl"],
        grant.json()["token"],
        options=rtc.RoomOptions(auto_subscribe=auto_subscribe),
    )
    return person


@asynccontextmanager
async def camera(room: rtc.Room) -> AsyncIterator[None]:
    """A synthetic camera: a red 320x240 picture at 10 frames a second."""
    source = rtc.VideoSource(320, 240)
    pixels = np.zeros((240, 320, 4), dtype=np.uint8)
    pixels[..., 0], pixels[..., 3] = 200, 255
    frame = rtc.VideoFrame(320, 240, rtc.VideoBufferType.RGBA, pixels.tobytes())
    track = rtc.LocalVideoTrack.create_video_track("camera", source)
    await room.local_participant.publish_track(
        track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA)
    )

    async def film() -> None:
        while True:
            source.capture_frame(frame)
            await asyncio.sleep(0.1)

    filming = asyncio.create_task(film())
    try:
        yield
    finally:
        filming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await filming


def images_in(request: dict[str, Any]) -> list[str]:
    return [
        part["image_url"]["url"]
        for m in request["body"]["messages"]
        if isinstance(m.get("content"), list)
        for part in m["content"]
        if part.get("type") == "image_url"
    ]


async def test_looking_at_the_patient_gives_the_model_one_camera_frame(
    api: httpx.AsyncClient, bus: Bus, settings: Settings, tenant_id: str, standin: OpenAIStandin
) -> None:
    room = f"consulta-{tag()}"
    patient = await joined(api, room, f"patient-{tag()}")
    # The agent's side of the room, as a worker in on-demand mode joins it: audio only.
    agent_room = await joined(api, room, f"agent-intake-{tag()}", auto_subscribe=False)
    clock = VideoClock()
    agent_room.on("track_subscribed", lambda track, *_: clock.subscribed(track))
    agent_room.on("track_unsubscribed", lambda track, *_: clock.unsubscribed(track))
    async with camera(patient):
        await until(lambda: vision.camera_of(agent_room, patient.local_participant.identity))
        publication = vision.camera_of(agent_room, patient.local_participant.identity)
        assert publication is not None and not publication.subscribed
        async with (
            consultation(
                bus,
                settings,
                role="intake",
                tenant=tenant_id,
                room=room,
                patient=patient.local_participant.identity,
                rtc_room=agent_room,
            ) as harness,
            session_on(standin, harness) as session,
        ):
            await session.run(user_input="Concordo.")
            result = await session.run(user_input="Você olha essa mancha no meu braço?")
            result.expect.next_event().is_function_call(name="look_at_patient")
            output = result.expect.next_event().is_function_call_output().event().item
            assert not output.is_error and "imagem da câmera foi adicionada" in output.output
            answer = result.expect.next_event().is_message(role="assistant").event().item
            assert answer.text_content == "Vejo uma área avermelhada no braço."
        # On demand: subscribed for the frame only, so a look costs seconds of video, not the
        # whole consultation.
        await until(lambda: not publication.subscribed and clock.seconds > 0)
        assert 0 < clock.seconds < 5
    follow_up = standin.requests("chat")[-1]
    images = images_in(follow_up)
    assert len(images) == 1 and images[0].startswith("data:image/jpeg;base64,")
    # The frame follows the tool's answer (OpenAI wants tool results right after their call).
    roles = [m["role"] for m in follow_up["body"]["messages"]]
    assert roles[-3:] == ["assistant", "tool", "user"]
    await patient.disconnect()
    await agent_room.disconnect()


async def test_without_a_camera_the_tool_tells_the_model_and_vision_can_be_off(
    api: httpx.AsyncClient, bus: Bus, settings: Settings, tenant_id: str, standin: OpenAIStandin
) -> None:
    room = f"consulta-{tag()}"
    patient = await joined(api, room, f"patient-{tag()}")
    agent_room = await joined(api, room, f"agent-intake-{tag()}", auto_subscribe=False)
    await until(lambda: patient.local_participant.identity in agent_room.remote_participants)
    async with (
        consultation(
            bus,
            settings,
            role="intake",
            tenant=tenant_id,
            room=room,
            patient=patient.local_participant.identity,
            rtc_room=agent_room,
        ) as harness,
        session_on(standin, harness) as session,
    ):
        await session.run(user_input="Concordo.")
        result = await session.run(user_input="Olha a mancha aqui.")
        result.expect.next_event().is_function_call(name="look_at_patient")
        output = result.expect.next_event().is_function_call_output().event().item
        assert output.is_error and "câmera do paciente está desligada" in output.output
        assert images_in(standin.requests("chat")[-1]) == []
    off = msgspec.structs.replace(settings, enable_vision=False)
    async with consultation(bus, off, role="intake", tenant=tenant_id) as harness:
        c = harness.consultation
        offered = [t.info.name for t in tools_of(c, c.role.tools)]
    assert vision.TOOL not in offered and "record_answer" in offered
    await patient.disconnect()
    await agent_room.disconnect()


async def test_streaming_mode_adds_the_latest_frame_to_the_patients_turn(
    api: httpx.AsyncClient, bus: Bus, settings: Settings, tenant_id: str, standin: OpenAIStandin
) -> None:
    room = f"consulta-{tag()}"
    patient = await joined(api, room, f"patient-{tag()}")
    agent_room = await joined(api, room, f"agent-intake-{tag()}", auto_subscribe=False)
    streaming = msgspec.structs.replace(
        settings, enable_vision_streaming=True, vision_stream_interval=1
    )
    async with camera(patient):
        await until(lambda: vision.camera_of(agent_room, patient.local_participant.identity))
        async with (
            consultation(
                bus,
                streaming,
                role="intake",
                tenant=tenant_id,
                room=room,
                patient=patient.local_participant.identity,
                rtc_room=agent_room,
            ) as harness,
            session_on(standin, harness) as session,
        ):
            sampler = harness.consultation.part(vision.FrameSampler)
            sampler.start()
            agent = session.current_agent
            await until(lambda: sampler.latest is not None)
            # What livekit-agents calls when the patient's spoken turn ends (session.run's text
            # turns do not go through it, so it is called here as the pipeline would).
            before = llm.ChatMessage(role="user", content=["Oi."])
            await agent.on_user_turn_completed(agent.chat_ctx.copy(), before)
            assert before.content == ["Oi."]  # no frames before consent
            await session.run(user_input="Concordo.")
            await until(lambda: sampler.latest is not None)
            turn = llm.ChatMessage(role="user", content=["Estou aqui, doutora."])
            await agent.on_user_turn_completed(agent.chat_ctx.copy(), turn)
            assert sampler.take() is None  # each frame goes to the model once
            await sampler.close()
        publication = vision.camera_of(agent_room, patient.local_participant.identity)
        assert publication is not None and publication.subscribed  # streaming keeps it
    assert turn.content[0] == "Estou aqui, doutora."
    assert isinstance(turn.content[1], llm.ImageContent)
    assert isinstance(turn.content[1].image, rtc.VideoFrame)
    await patient.disconnect()
    await agent_room.disconnect()
