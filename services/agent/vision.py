"""Vision: ``look_at_patient`` gives the model one frame of the patient's camera, on demand;
streaming mode (``ENABLE_VISION_STREAMING``, off by default) adds the latest frame, sampled every
few seconds, to each of the patient's turns; ``ENABLE_VISION=false`` turns vision off entirely.

Video is metered while a camera track is subscribed (``SessionRuntime.VideoClock``): on demand,
the camera is subscribed only while a frame is taken, so a consultation that never looks costs no
video minutes; streaming keeps it subscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from livekit import rtc
from livekit.agents import RunContext, function_tool
from livekit.agents.llm import ImageContent, ToolError

from services.agent.consultation import Consultation, consultation_of
from shared.config import Settings

log = logging.getLogger(__name__)

TOOL = "look_at_patient"
FRAME_TIMEOUT = 5.0
# Big enough to see skin, a wound or a face; small enough to keep a turn fast and cheap.
INFERENCE_SIZE = 768


class NoCameraError(Exception):
    """The patient has no camera on (or it sends nothing)."""


def enabled(settings: Settings) -> bool:
    return settings.enable_vision


def streaming(settings: Settings) -> bool:
    return settings.enable_vision and settings.enable_vision_streaming


def camera_of(room: rtc.Room, identity: str) -> rtc.RemoteTrackPublication | None:
    """The participant's camera (or, without one labelled so, any video but a screen share)."""
    participant = room.remote_participants.get(identity)
    if participant is None:
        return None
    videos = [
        p
        for p in participant.track_publications.values()
        if p.kind == rtc.TrackKind.KIND_VIDEO
        and not p.muted
        and p.source != rtc.TrackSource.SOURCE_SCREENSHARE
    ]
    cameras = [p for p in videos if p.source == rtc.TrackSource.SOURCE_CAMERA]
    found = cameras or videos
    return found[0] if found else None


async def _subscribed(
    room: rtc.Room, publication: rtc.RemoteTrackPublication, timeout: float
) -> rtc.Track:
    arrived = asyncio.Event()

    def on_subscribed(track: rtc.Track, pub: rtc.RemoteTrackPublication, *_: Any) -> None:
        if pub.sid == publication.sid:
            arrived.set()

    room.on("track_subscribed", on_subscribed)
    try:
        if publication.track is None:
            publication.set_subscribed(True)
            await asyncio.wait_for(arrived.wait(), timeout)
    except TimeoutError:
        raise NoCameraError("the camera could not be subscribed") from None
    finally:
        room.off("track_subscribed", on_subscribed)
    assert publication.track is not None
    return publication.track


async def capture_frame(
    room: rtc.Room, identity: str, *, keep_subscribed: bool = False, timeout: float = FRAME_TIMEOUT
) -> rtc.VideoFrame:
    """One frame of ``identity``'s camera; NoCameraError when there is none or it is silent.
    A camera this subscribed only to take the frame is unsubscribed again (not metered)."""
    publication = camera_of(room, identity)
    if publication is None:
        raise NoCameraError("no camera track")
    was_subscribed = publication.track is not None
    track = await _subscribed(room, publication, timeout)
    stream = rtc.VideoStream(track)
    try:
        event = await asyncio.wait_for(anext(aiter(stream)), timeout)
    except (TimeoutError, StopAsyncIteration):
        raise NoCameraError("the camera sends no frames") from None
    finally:
        await stream.aclose()
        if not was_subscribed and not keep_subscribed:
            publication.set_subscribed(False)
    return event.frame


def image(frame: rtc.VideoFrame) -> ImageContent:
    return ImageContent(
        image=frame, inference_width=INFERENCE_SIZE, inference_height=INFERENCE_SIZE
    )


@function_tool(name=TOOL)
async def look_at_patient(context: RunContext[Any], question: str) -> str:
    """Olha agora pela câmera do paciente (uma imagem). Use quando ver ajudar, por exemplo
    quando o paciente pedir para você ver algo (uma mancha, um inchaço, um ferimento) ou quando
    você pedir para ele mostrar. Diga só o que dá para ver, em termos simples: nunca faça
    diagnóstico pela imagem.

    Args:
        question: o que você quer observar na imagem.
    """
    consultation = consultation_of(context)
    if not enabled(consultation.settings):
        raise ToolError(
            "A visão pela câmera está desligada nesta clínica; peça ao paciente que "
            "descreva o que vê."
        )
    room, identity = consultation.rtc_room, consultation.patient()
    if room is None or not identity:
        raise ToolError("Não há paciente com câmera nesta chamada.")
    try:
        frame = await capture_frame(
            room, identity, keep_subscribed=streaming(consultation.settings)
        )
    except NoCameraError:
        raise ToolError(
            "A câmera do paciente está desligada ou não está enviando imagem. Peça "
            "para ele ligar a câmera, se quiser que você veja; não imagine o que "
            "veria."
        ) from None
    agent = context.session.current_agent
    chat_ctx = agent.chat_ctx.copy()
    chat_ctx.add_message(
        role="user",
        content=[
            f"[Imagem da câmera do paciente, agora. O que observar: {question.strip()[:300]}]",
            image(frame),
        ],
    )
    await agent.update_chat_ctx(chat_ctx)
    return (
        "A imagem da câmera foi adicionada à conversa. Responda com o que dá para ver, em "
        "termos simples, sem diagnóstico; se não der para ver bem, diga isso."
    )


class FrameSampler:
    """Streaming mode: the patient's latest frame, taken every ``vision_stream_interval``
    seconds, for the agent to attach to each of the patient's turns."""

    def __init__(self, consultation: Consultation) -> None:
        self.consultation = consultation
        self.latest: rtc.VideoFrame | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None and self.consultation.rtc_room is not None:
            self._task = asyncio.create_task(self._run(), name="mediai-vision-stream")

    def take(self) -> ImageContent | None:
        frame, self.latest = self.latest, None  # each frame is sent once
        return image(frame) if frame is not None else None

    async def _run(self) -> None:
        room = self.consultation.rtc_room
        assert room is not None
        while True:
            identity = self.consultation.patient()
            if identity:
                try:
                    self.latest = await capture_frame(room, identity, keep_subscribed=True)
                except NoCameraError:
                    self.latest = None
            await asyncio.sleep(self.consultation.settings.vision_stream_interval)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
