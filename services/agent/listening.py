"""Hearing everyone apart: a text-only role (the doctor's copilot) transcribes each person in the
room with their own STT stream, so every segment knows who said it (doctor or patient).

A speaking agent hears one person at a time through livekit-agents' RoomIO; a copilot must hear
both sides of the consultation and tell them apart, which one mixed input cannot do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from livekit import rtc
from livekit.agents import stt as lk_stt

log = logging.getLogger(__name__)

OnFinal = Callable[[str, str], None]


class RoomListener:
    """One STT stream per qualifying participant's microphone; ``on_final(identity, text)`` for
    each final transcript. Non-streaming STTs (OpenAI's) are cut into utterances by the VAD."""

    def __init__(
        self,
        room: rtc.Room,
        *,
        stt: lk_stt.STT[Any],
        vad: Any,
        qualifies: Callable[[rtc.RemoteParticipant], bool],
        on_final: OnFinal,
    ) -> None:
        self.room, self.stt, self.vad = room, stt, vad
        self.qualifies, self.on_final = qualifies, on_final
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self) -> None:
        self.room.on("track_subscribed", self._on_track)
        self.room.on("track_unsubscribed", self._on_untrack)
        for participant in self.room.remote_participants.values():
            for publication in participant.track_publications.values():
                if publication.track is not None:
                    self._on_track(publication.track, publication, participant)

    def _on_track(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        if track.kind != rtc.TrackKind.KIND_AUDIO or not self.qualifies(participant):
            return
        if publication.sid in self._tasks:
            return
        self._tasks[publication.sid] = asyncio.create_task(
            self._transcribe(track, participant.identity), name="mediai-listen"
        )

    def _on_untrack(
        self,
        track: rtc.Track,
        publication: rtc.RemoteTrackPublication,
        participant: rtc.RemoteParticipant,
    ) -> None:
        task = self._tasks.pop(publication.sid, None)
        if task is not None:
            task.cancel()

    def _recognizer(self) -> lk_stt.STT[Any]:
        if self.stt.capabilities.streaming:
            return self.stt
        return lk_stt.StreamAdapter(stt=self.stt, vad=self.vad)

    async def _transcribe(self, track: rtc.Track, identity: str) -> None:
        # 100 ms frames, as the speaking session hears (session.HEARING_FRAME_MS): livekit-rtc's
        # default is 10 ms, ten times the events and channel hops per second on the event loop.
        audio = rtc.AudioStream(track, sample_rate=16_000, num_channels=1, frame_size_ms=100)
        stream = self._recognizer().stream()

        async def push() -> None:
            async for event in audio:
                stream.push_frame(event.frame)
            stream.end_input()

        pushing = asyncio.create_task(push())
        try:
            async for event in stream:
                if event.type != lk_stt.SpeechEventType.FINAL_TRANSCRIPT or not event.alternatives:
                    continue
                text = event.alternatives[0].text.strip()
                if text:
                    self.on_final(identity, text)
        except Exception as error:  # noqa: BLE001 - one person's STT failing must not end it
            log.warning("listening: transcription stopped: %s", type(error).__name__)
        finally:
            pushing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pushing
            await stream.aclose()
            await audio.aclose()

    async def close(self) -> None:
        self.room.off("track_subscribed", self._on_track)
        self.room.off("track_unsubscribed", self._on_untrack)
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
