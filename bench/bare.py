"""What the benchmarks' bare baselines share: serving an app exactly as ``mediai serve`` serves a
service (uvicorn with uvloop and httptools, no access log), so a pair differs only in the app;
running a bare livekit-agents worker until the bench stops it."""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING

import uvicorn
from litestar import Litestar

if TYPE_CHECKING:
    from livekit.agents import AgentServer


def serve(app: Litestar, host: str, port: int) -> None:
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


async def run_until_signalled(worker: AgentServer) -> None:
    """Run ``worker`` until it stops or SIGTERM/SIGINT arrives, then close it (the bare
    workers' main, as the benches stop them)."""
    running = asyncio.create_task(worker.run(devmode=False))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await asyncio.wait({running, asyncio.create_task(stop.wait())}, return_when="FIRST_COMPLETED")
    await worker.aclose()
