"""A session's non-streaming STT, cut into utterances by the session's VAD
(services/agent/utterances.py): what reaches the provider (the OpenAI stand-in) for each flush."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import stt as lk_stt
from livekit.agents.voice.events import UserStateChangedEvent
from livekit.plugins import openai

from services.agent.session import HEARING_RATE, session_stt
from services.agent.utterances import BEFORE_SPEECH_SECONDS, UtteranceSTT
from tests.standin import OpenAIStandin
from tests.standin.audio import tone

FRAME = HEARING_RATE // 10  # 100 ms, as the session hears


def push(stream: lk_stt.RecognizeStream, pcm: np.ndarray) -> None:
    for start in range(0, len(pcm), FRAME):
        piece = pcm[start : start + FRAME]
        stream.push_frame(rtc.AudioFrame(piece.tobytes(), HEARING_RATE, 1, len(piece)))


def room_noise(seconds: float) -> np.ndarray:
    """A quiet room: low noise, not digital silence."""
    rng = np.random.default_rng(7)
    return (rng.standard_normal(int(seconds * HEARING_RATE)) * 40).astype("<i2")


def user(stt: UtteranceSTT, old: str, new: str) -> None:
    stt.on_user_state(UserStateChangedEvent(old_state=old, new_state=new))  # type: ignore[arg-type]


async def test_each_flush_transcribes_the_utterance_from_just_before_the_user_spoke(
    openai_standin: OpenAIStandin,
) -> None:
    openai_standin.reset()
    openai_standin.transcripts("bom dia", "tudo bem")
    whisper = openai.STT(
        model="gpt-4o-mini-transcribe",
        language="pt",
        base_url=openai_standin.base_url,
        api_key="standin-key",
    )
    stt = session_stt(whisper)
    assert isinstance(stt, UtteranceSTT) and stt.capabilities.manual_flush
    metered: list[Any] = []
    stt.on("metrics_collected", metered.append)
    stream = stt.stream()
    try:
        push(stream, room_noise(5.0))  # the room before the user speaks: not sent
        user(stt, "listening", "speaking")
        push(stream, tone(2.0, HEARING_RATE))
        user(stt, "speaking", "listening")
        push(stream, room_noise(0.6))  # the VAD's silence before it ends the utterance
        stream.flush()
        first = await asyncio.wait_for(anext(stream), 10)

        push(stream, np.zeros(3 * HEARING_RATE, dtype="<i2"))  # the STT is given zeros: not sent
        stream.flush()
        push(stream, room_noise(3.0))
        user(stt, "listening", "speaking")
        push(stream, tone(1.0, HEARING_RATE))
        stream.flush()
        second = await asyncio.wait_for(anext(stream), 10)
    finally:
        await stream.aclose()

    assert first.type == lk_stt.SpeechEventType.FINAL_TRANSCRIPT
    assert (first.alternatives[0].text, second.alternatives[0].text) == ("bom dia", "tudo bem")
    uploads = [request["audio"] for request in openai_standin.requests("transcription")]
    assert [u["sample_rate"] for u in uploads] == [HEARING_RATE, HEARING_RATE]
    assert uploads[0]["duration"] == round(BEFORE_SPEECH_SECONDS + 2.0 + 0.6, 6)
    assert uploads[1]["duration"] == round(BEFORE_SPEECH_SECONDS + 1.0, 6)
    assert uploads[0]["rms"] > 500
    # what the provider was sent is what the session meters (and bills) as STT audio
    seconds = [m.audio_duration for m in metered if m.audio_duration]
    assert seconds == [u["duration"] for u in uploads]


def test_a_streaming_stt_is_run_as_it_is() -> None:
    streaming = openai.STT(model="gpt-4o-transcribe", use_realtime=True, api_key="standin-key")
    assert streaming.capabilities.streaming
    assert session_stt(streaming) is streaming
    assert session_stt(None) is None
