"""Audio helpers for the OpenAI stand-in: a deterministic "voice" and WAV inspection.

OpenAI's /audio/speech always produces 24 kHz mono audio (`pcm` is raw 16-bit little-endian at
24 kHz, per the API reference), and livekit-plugins-openai's TTS declares SAMPLE_RATE = 24000,
so everything here is made at that rate. A sine tone stands in for speech: it is real, non-silent
audio, deterministic, and its length follows the text so tests can reason about durations.
"""

from __future__ import annotations

import io
import wave
from typing import Any

import numpy as np

SAMPLE_RATE = 24_000
SECONDS_PER_CHAR = 0.06  # ~16 characters a second, roughly a calm speaking pace
TONE_HZ = 220.0

# response_format -> (Content-Type OpenAI answers with, PyAV container, PyAV encoder)
FORMATS: dict[str, tuple[str, str | None, str | None]] = {
    "pcm": ("audio/pcm", None, None),
    "wav": ("audio/wav", None, None),
    "mp3": ("audio/mpeg", "mp3", "libmp3lame"),
    "opus": ("audio/opus", "ogg", "libopus"),
    "aac": ("audio/aac", "adts", "aac"),
    "flac": ("audio/flac", "flac", "flac"),
}


def speech_seconds(text: str, speed: float = 1.0) -> float:
    return max(0.25, len(text) * SECONDS_PER_CHAR / max(speed, 0.25))


def tone(seconds: float, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A 16-bit mono sine tone with 10 ms fades (no clicks at the edges)."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    signal = 0.3 * np.sin(2 * np.pi * TONE_HZ * t)
    fade = min(n // 2, rate // 100)
    if fade:
        ramp = np.linspace(0.0, 1.0, fade)
        signal[:fade] *= ramp
        signal[-fade:] *= ramp[::-1]
    return (signal * 32767).astype("<i2")


def wav_bytes(pcm: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def encode(pcm: np.ndarray, response_format: str) -> bytes:
    """The tone in the container/codec OpenAI would answer `response_format` with."""
    if response_format == "pcm":
        return pcm.tobytes()
    if response_format == "wav":
        return wav_bytes(pcm)
    _, container, codec = FORMATS[response_format]
    # PyAV ships with livekit-agents (its TTS decoder uses it); imported lazily since only the
    # compressed formats need it
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream: Any = out.add_stream(codec, rate=SAMPLE_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        # the encoder re-chunks to its own frame size; encode(None) flushes it
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    return buf.getvalue()


def describe_upload(data: bytes) -> dict[str, Any]:
    """What arrived in a transcription upload: size, and for WAV its format, length and loudness."""
    info: dict[str, Any] = {"bytes": len(data)}
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            rate, channels, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            frames = w.readframes(w.getnframes())
            info.update(
                sample_rate=rate,
                channels=channels,
                duration=w.getnframes() / rate,
            )
    except (wave.Error, EOFError):
        return info
    if width == 2 and frames:
        samples = np.frombuffer(frames, dtype="<i2").astype(np.float64)
        # RMS in dBFS-free units (0..32767), so a test can tell speech from silence
        info["rms"] = float(np.sqrt(np.mean(samples**2)))
    return info
