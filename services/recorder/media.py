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
# Seconds the recorder waits to hear the voices already in the room before its clock starts.
HEARING_TIMEOUT = 5.0


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


def _subscribe_audio(publication: rtc.RemoteTrackPublication) -> None:
    if publication.kind == rtc.TrackKind.KIND_AUDIO:
        publication.set_subscribed(True)


async def record(
    url: str,
    token: str,
    encoder: OpusOgg,
    stop: asyncio.Event,
    started: Callable[[], Awaitable[None]],
) -> str:
    """Record the room until ``stop`` is set (returns "stopped") or everyone else left it
    (returns "room_ended"); ``started`` is awaited once the voices already in the room are
    heard (or after ``HEARING_TIMEOUT``), when the file's clock starts. Raises
    ``rtc.ConnectError`` when the room cannot be joined."""
    room, mixer = rtc.Room(), Mixer()
    listening: dict[str, asyncio.Task[None]] = {}
    empty, hearing = asyncio.Event(), asyncio.Event()
    expected = 0

    def on_subscribed(track: rtc.Track, _: Any, __: rtc.RemoteParticipant) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            listening[track.sid] = asyncio.create_task(_listen(track, track.sid, mixer))
            if len(listening) >= expected:
                hearing.set()

    def on_unsubscribed(track: rtc.Track, _: Any, __: rtc.RemoteParticipant) -> None:
        task = listening.pop(track.sid, None)
        if task is not None:
            task.cancel()
        mixer.remove(track.sid)

    def on_left(_: rtc.RemoteParticipant) -> None:
        if not room.remote_participants:
            empty.set()

    room.on("track_published", lambda publication, _: _subscribe_audio(publication))
    room.on("track_subscribed", on_subscribed)
    room.on("track_unsubscribed", on_unsubscribed)
    room.on("participant_disconnected", on_left)
    room.on("disconnected", lambda *_: empty.set())
    await room.connect(url, token, rtc.RoomOptions(auto_subscribe=False))
    try:
        voices = [
            publication
            for participant in room.remote_participants.values()
            for publication in participant.track_publications.values()
            if publication.kind == rtc.TrackKind.KIND_AUDIO
        ]
        expected = len(voices)
        if len(listening) >= expected:
            hearing.set()
        for publication in voices:
            publication.set_subscribed(True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hearing.wait(), HEARING_TIMEOUT)
        await started()
        return await _clock(encoder, mixer, stop, empty)
    finally:
        for task in listening.values():
            task.cancel()
        await room.disconnect()


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
