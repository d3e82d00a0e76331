"""What an agent worker process does first, before the heavy imports: name itself and start the
forkserver its job processes are forked from, so the forkserver's preload (livekit-agents, the
session's modules, Silero, the providers' plugins) runs on the other core while this process
imports livekit-agents itself, connects to NATS and registers with LiveKit.

livekit-agents would start the same forkserver later, from ``AgentServer.run``, and only then
connect to LiveKit: the two preloads ran one after the other, and registration waited for both
(docs/performance.md, "Agent worker cold start"). This module imports nothing heavy.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import socket
import ssl

import certifi

from services.agent.providers import missing_credentials
from shared.config import Settings

WORKER_ID_VARIABLE = "MEDIAI_AGENT_WORKER_ID"
# glibc gives a thread that allocates an arena of its own (up to eight per core), each keeping
# the memory freed in it: a job process runs ~20 threads (webrtc's, tokio's, the VAD's executor).
# Read by glibc when a process starts: set before the forkserver is started, job processes forked
# from it inherit it. A deployment's own value wins.
MALLOC_ARENAS_VARIABLE = "MALLOC_ARENA_MAX"
MALLOC_ARENAS = "2"
# livekit-agents' event-loop monitor ticks every fifth of its warn threshold, twice (a heartbeat
# on the loop, a watchdog thread): at its default 100 ms, 100 wake-ups a second in every job
# process, the warm ones waiting for a job too. At 250 ms it ticks every 50 ms (its slowest) and
# still reports every block of a quarter second or more. A deployment's own value wins.
LOOP_BLOCK_VARIABLE = "LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS"
LOOP_BLOCK_WARN_MS = "250"
# The livekit-agents preload of local inference models: the VAD and the end-of-turn model
# (~250 MB, seconds to load). MediAI's turns end on Silero's VAD (the plugin's model), so a
# worker never uses them; "0" skips them.
LOCAL_INFERENCE_VARIABLE = "LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE"

# Imported once in the forkserver, so a job process does not spend its first second importing
# them while the patient waits (livekit-agents warns about it); a provider without credentials
# is not loaded at all (Gemini's SDKs alone take seconds to import).
PRELOAD = [
    "services.agent.session",
    "livekit.plugins.silero",
    # Silero's VAD and what a session loads on first use, built once and shared copy-on-write
    # by the job processes.
    "services.agent.preload",
    "anyio.streams.memory",
    # OpenSSL's bindings load on first use: the job's first key exchange must not pay for it.
    "cryptography.hazmat.backends.openssl.backend",
]
PROVIDER_PRELOAD = {
    # The SDK imports its chat and audio resources on a client's first use of them: in a job
    # process, during the first turn (~0.4 s of CPU, py-spy).
    "openai": [
        "livekit.plugins.openai",
        "openai.types.beta.realtime",
        "openai.resources.chat.chat",
        "openai.resources.audio.audio",
    ],
    "google": ["livekit.plugins.google"],
}
# What livekit-agents appends to every forkserver preload (AgentServer.run), the freeze last.
FRAMEWORK_PRELOAD = ["livekit.agents.ipc._preload", "livekit.agents.ipc._preload_freeze"]


def worker_id() -> str:
    """The pool's id for this worker, or (run by an orchestrator) its host and pid: a pod's
    name is unique where its pid is not."""
    return os.environ.get(WORKER_ID_VARIABLE) or f"{socket.gethostname()}-{os.getpid()}"


def preload_modules(settings: Settings) -> list[str]:
    missing = missing_credentials(settings)
    usable = [
        m
        for provider, modules in PROVIDER_PRELOAD.items()
        if provider not in missing
        for m in modules
    ]
    return [*PRELOAD, *usable]


def start_forkserver(settings: Settings) -> None:
    """Fix the environment job processes inherit, then start the forkserver with the preload
    livekit-agents would give it. It runs in the background; AgentServer finds it running and
    forks its job processes from it."""
    # Job processes are forked from the forkserver: they get its environment, fixed now,
    # including what AgentServer.run would have set before starting it (the LiveKit
    # credentials a job's ctx.api reads, and a CA bundle where the system has none).
    os.environ[WORKER_ID_VARIABLE] = worker_id()
    os.environ.setdefault(LOCAL_INFERENCE_VARIABLE, "0")
    os.environ.setdefault(MALLOC_ARENAS_VARIABLE, MALLOC_ARENAS)
    os.environ.setdefault(LOOP_BLOCK_VARIABLE, LOOP_BLOCK_WARN_MS)
    os.environ["LIVEKIT_URL"] = settings.livekit_url
    os.environ["LIVEKIT_API_KEY"] = settings.livekit_api_key
    os.environ["LIVEKIT_API_SECRET"] = settings.livekit_api_secret
    if not (os.environ.get("SSL_CERT_FILE") or os.environ.get("SSL_CERT_DIR")):
        paths = ssl.get_default_verify_paths()
        if not (paths.cafile and os.path.exists(paths.cafile)) and not (
            paths.capath and os.path.isdir(paths.capath)
        ):
            os.environ["SSL_CERT_FILE"] = certifi.where()
    multiprocessing.get_context("forkserver").set_forkserver_preload(
        [*preload_modules(settings), *FRAMEWORK_PRELOAD]
    )
    multiprocessing.forkserver.ensure_running()
