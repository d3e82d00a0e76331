"""Side-effect module: what every job process would otherwise build for itself after the fork,
built once in the forkserver (services/agent/startup.py lists it before livekit-agents' freeze),
so its pages stay shared, copy-on-write, by all the worker's job processes.

Silero's VAD: its ONNX Runtime session (the model and the optimised graph) is the same in every
job; built per job process, it cost each one its own copy and ~0.1 s of CPU while warming up.
The session runs on the calling thread (Silero sets one intra-op and one inter-op thread,
sequential execution), so the forkserver holds no thread pool a fork could break. A process
that imports this module without a forkserver (a test running a session in its own process)
builds the VAD at import, as prewarm did.
"""

from __future__ import annotations

from typing import Any

from livekit.plugins import silero

VAD: Any = silero.VAD.load()
