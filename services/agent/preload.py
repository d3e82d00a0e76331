"""Side-effect module: what every job process would otherwise build for itself after the fork,
built once in the forkserver (services/agent/startup.py lists it before livekit-agents' freeze),
so each job process neither pays for it during its consultation nor holds its own copy: the pages
stay shared, copy-on-write, by all the worker's job processes.

- Silero's VAD: its ONNX Runtime session (the model and the optimised graph) is the same in
  every job; built per job process, it cost each one its own copy (~10 MiB unique) and ~0.1 s of
  CPU while warming up. The session runs on the calling thread (Silero sets one intra-op and one
  inter-op thread, sequential execution), so the forkserver holds no thread pool a fork could
  break.
- What livekit-agents loads on a session's first use: numpy's FFT (the speaking-rate estimate
  that paces the agent's transcript), ``wave`` (a non-streaming STT's upload) and the
  hyphenation patterns (the transcript's syllable count, a tree built on first call). Seen with
  py-spy as imports and pattern building on a job's event loop during its first turns.

A process that imports this module without a forkserver (a test running a session in its own
process) builds all this at import, as prewarm did.
"""

from __future__ import annotations

import wave  # noqa: F401
from typing import Any

import numpy.fft  # noqa: F401
from livekit.agents.tokenize import basic
from livekit.plugins import silero

VAD: Any = silero.VAD.load()
basic.hyphenate_word("consulta")  # builds and caches the pattern tree
