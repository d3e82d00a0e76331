"""The recorder in the room: a hidden participant that subscribes to every voice, mixes them on
its own clock and encodes Opus in OGG (PyAV, which bundles ffmpeg and libopus).

The mix is driven by the wall clock, 20 ms at a time, so the file lasts as long as the recording
did: a voice that is silent, late or gone contributes silence. Each voice waits in its own
buffer until it holds 100 ms (jitter), and never holds more than a second (a stalled clock drops
the oldest audio rather than drifting). Video is not subscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, BinaryIO

import av
import numpy as np
from livekit import rtc

from services.recorder import core

RATE = 48_000
BLOCK = RATE // 50  # 20 ms, one Opus frame
JITTER = RATE // 10
BACKLOG = RATE
BIT_RATE = 32_000
# Seconds the recorder waits to hear the voices already in the room before its clock starts
# (a subscription takes well under a second, but seconds on a loaded host; starting earlier would
# announce a recording that misses the first words).
HEARING_TIMEOUT = 10.0


class Mixer:
    """Voices in, one mono timeline out (see the module docstring)."""

    def __init__(self) -> None:
        self.voices: dict[str, np.ndarray] = {}
        self._playing: set[str] = set()

    def push(self, voice: str, samples: np.ndarray) -> None:
        buffer = np.concatenate((self.voices.get(voice, np.empty(0, np.int16)), samples))
        self.voices[voice] = buffer[-BACKLOG:]

    def remove(self, voice: str) -> None:
        self.voices.pop(voice, None)
        self._playing.discard(voice)

    def block(self) -> np.ndarray:
        """The next 20 ms of the mix."""
        mixed = np.zeros(BLOCK, np.int32)
        for voice, buffer in self.voices.items():
            if voice not in self._playing and len(buffer) < JITTER:
                continue
            taken = buffer[:BLOCK]
            mixed[: len(taken)] += taken
            self.voices[voice] = buffer[BLOCK:]
            if len(taken) < BLOCK:  # ran dry: wait for the jitter buffer to fill again
                self._playing.discard(voice)
            else:
                self._playing.add(voice)
        return np.clip(mixed, -32768, 32767).astype(np.int16)


class OpusOgg:
    """Mono 48 kHz blocks to Opus in OGG, written to ``sink`` as they are encoded."""

    def __init__(self, sink: BinaryIO) -> None:
        self.container: Any = av.open(sink, mode="w", format="ogg")
        self.stream: Any = self.container.add_stream("libopus", rate=RATE, layout="mono")
        self.stream.bit_rate = BIT_RATE
        self.samples = 0

    def encode(self, block: np.ndarray | None) -> None:
        frame = None
        if block is not None:
            frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate, frame.pts = RATE, self.samples
            self.samples += len(block)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        self.encode(None)
        self.container.close()


async def _listen(track: rtc.Track, voice: str, mixer: Mixer) -> None:
    async for event in rtc.AudioStream(track, sample_rate=RATE, num_channels=1):
        mixer.push(voice, np.frombuffer(event.frame.data, dtype=np.int16).copy())


def _audio(room: rtc.Room) -> list[rtc.RemoteTrackPublication]:
    return [
        publication
        for participant in room.remote_participants.values()
        for publication in participant.track_publications.values()
        if publication.kind == rtc.TrackKind.KIND_AUDIO
    ]


class HiddenRecorder:
    """The recorder's participant in one room. It joins when the recording is asked for: its
    token's ``recorder`` grant makes LiveKit show the room as recorded (``room.isRecording``),
    so the agent asks the patient's consent to the recording. It subscribes to nothing until
    ``record`` is called, once the patient consented."""

    def __init__(self) -> None:
        self.room, self.mixer = rtc.Room(), Mixer()
        # Set when everyone else left the room (or it closed).
        self.empty = asyncio.Event()
        self._listening: dict[str, asyncio.Task[None]] = {}
        self._hearing = asyncio.Event()
        self._recording, self._expected = False, 0
        self.room.on("track_published", self._on_published)
        self.room.on("track_subscribed", self._on_subscribed)
        self.room.on("track_unsubscribed", self._on_unsubscribed)
        self.room.on("participant_disconnected", self._on_left)
        self.room.on("disconnected", lambda *_: self.empty.set())

    async def join(self, url: str, token: str) -> None:
        """Raises ``rtc.ConnectError`` when the room cannot be joined."""
        await self.room.connect(url, token, rtc.RoomOptions(auto_subscribe=False))

    async def record(
        self, encoder: OpusOgg, stop: asyncio.Event, started: Callable[[], Awaitable[None]]
    ) -> str:
        """Record until ``stop`` is set (returns "stopped") or everyone else left (returns
        "room_ended"); ``started`` is awaited once the voices already in the room are heard (or
        after ``HEARING_TIMEOUT``), when the file's clock starts."""
        self._recording = True
        voices = _audio(self.room)
        self._expected = len(voices)
        if len(self._listening) >= self._expected:
            self._hearing.set()
        for publication in voices:
            publication.set_subscribed(True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hearing.wait(), HEARING_TIMEOUT)
        await started()
        return await _clock(encoder, self.mixer, stop, self.empty)

    async def leave(self) -> None:
        for task in self._listening.values():
            task.cancel()
        await self.room.disconnect()

    def _on_published(self, publication: rtc.RemoteTrackPublication, _: Any) -> None:
        if self._recording and publication.kind == rtc.TrackKind.KIND_AUDIO:
            publication.set_subscribed(True)

    def _on_subscribed(self, track: rtc.Track, _: Any, __: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            self._listening[track.sid] = asyncio.create_task(_listen(track, track.sid, self.mixer))
            if len(self._listening) >= self._expected:
                self._hearing.set()

    def _on_unsubscribed(self, track: rtc.Track, _: Any, __: rtc.RemoteParticipant) -> None:
        task = self._listening.pop(track.sid, None)
        if task is not None:
            task.cancel()
        self.mixer.remove(track.sid)

    def _on_left(self, _: rtc.RemoteParticipant) -> None:
        if not self.room.remote_participants:
            self.empty.set()


async def _clock(encoder: OpusOgg, mixer: Mixer, stop: asyncio.Event, empty: asyncio.Event) -> str:
    """One block every 20 ms of wall-clock time until stopped (catching up after a stall)."""
    due = time.monotonic()
    while True:
        if stop.is_set():
            return core.STOPPED
        if empty.is_set():
            return core.ROOM_ENDED
        while time.monotonic() >= due:
            encoder.encode(mixer.block())
            due += BLOCK / RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))
