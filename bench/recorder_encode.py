"""What one recording costs the recorder besides WebRTC: mixing two voices on the 20 ms clock,
encoding Opus in OGG (PyAV) and sealing the file in AES-GCM chunks, per minute of consultation,
and the file's size per minute. No stack: speech from tests/data, as fast as it goes.

Run: uv run python -m bench.recorder_encode [--minutes 5]. Prints figures; never fails.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

from services.recorder.media import BLOCK, RATE, Mixer, OpusOgg
from services.recorder.sealed_file import SealedWriter
from shared.crypto import DataKey, new_secret

SPEECH = Path(__file__).resolve().parent.parent / "tests" / "data" / "patient-headache.pt-BR.wav"


def voice(seconds: float) -> np.ndarray:
    """The test speech at 48 kHz (nearest-sample resampling is enough to load an encoder),
    repeated with pauses for ``seconds``."""
    with wave.open(str(SPEECH)) as recording:
        rate = recording.getframerate()
        pcm = np.frombuffer(recording.readframes(recording.getnframes()), dtype=np.int16)
    resampled = pcm[(np.arange(int(len(pcm) * RATE / rate)) * rate / RATE).astype(int)]
    turn = np.concatenate([resampled, np.zeros(RATE * 2, np.int16)])
    return np.tile(turn, int(seconds * RATE / len(turn)) + 1)[: int(seconds * RATE)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=5.0)
    minutes = parser.parse_args().minutes
    seconds = minutes * 60
    patient, doctor = voice(seconds), np.roll(voice(seconds), RATE * 3)
    key = DataKey("bench", "tbench", "clinical", "p-1", new_secret())
    with tempfile.TemporaryDirectory() as folder:
        writer = SealedWriter(Path(folder) / "r.ogg.sealed", key, "EG_bench")
        encoder, mixer = OpusOgg(writer), Mixer()  # type: ignore[arg-type]
        started_cpu, started = time.process_time(), time.perf_counter()
        for at in range(0, len(patient), BLOCK):
            mixer.push("patient", patient[at : at + BLOCK])
            mixer.push("doctor", doctor[at : at + BLOCK])
            encoder.encode(mixer.block())
        encoder.close()
        size = writer.close()
        cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started
    print(f"{minutes:g} min of two voices: {cpu:.2f} s CPU ({wall:.2f} s wall)")
    print(
        f"  CPU per minute recorded: {cpu / minutes * 1000:.0f} ms ({cpu / seconds:.2%} of a core)"
    )
    print(
        f"  sealed file: {size / minutes / 1024:.0f} KiB per minute ({size * 8 / seconds / 1000:.1f} kbit/s)"
    )


if __name__ == "__main__":
    main()
