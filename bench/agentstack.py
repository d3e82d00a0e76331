"""What the agent benches run on: the local stack as ``mediai up`` starts it (its own worker
pool), the OpenAI-compatible stand-in as its own process (its CPU apart from the patients'),
the bare voice agent (bench/bare_agent.py) beside it, and the figures' summary and JSON record.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench import records
from bench.bare_agent import AGENT_NAME
from bench.records import RESULTS
from deploy.stack import Stack, StackState
from shared.bus import connect_bus
from shared.config import Settings
from tests.support import stack_settings, until
from tests.test_agent_e2e import HEARD, registered_workers

ANSWER = "Entendi. Desde quando a dor começou?"
REGISTERED = "registered worker"


@dataclass
class AgentStack:
    settings: Settings
    state: StackState
    standin_url: str  # the stand-in's base URL (…/v1)
    standin_pid: int
    api: httpx.AsyncClient

    def part_pid(self, name: str) -> int:
        pids = [p.pid for p in self.state.parts if p.name == name and p.pid is not None]
        if not pids:
            raise RuntimeError(f"the stack runs no {name!r}")
        return pids[0]


@contextlib.asynccontextmanager
async def process(command: list[str], env: dict[str, str], log: Path) -> AsyncIterator[int]:
    """A child process in its own group, its output in ``log``; SIGTERM (then SIGKILL) at
    the end. Yields its pid."""
    with log.open("wb") as out:
        child = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out, env=env,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield child.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(child.wait(), 20)
        except TimeoutError:
            os.killpg(child.pid, signal.SIGKILL)
            await child.wait()


async def logged(log: Path, text: str, timeout: float) -> None:
    await until(lambda: text in log.read_text(errors="replace"), timeout, step=0.2)


async def script_standin(url: str) -> None:
    """The stand-in hears the sentence and answers one short sentence, to every patient."""
    root = url.removesuffix("/v1")
    async with httpx.AsyncClient(base_url=root) as client:
        (await client.post("/_standin/reset")).raise_for_status()
        document = {"replace": True, "transcript_default": HEARD, "chat_default": ANSWER}
        (await client.post("/_standin/script", json=document)).raise_for_status()


@contextlib.asynccontextmanager
async def agent_stack(
    services: tuple[str, ...] | None = ("token", "dispatcher"), **overrides: Any
) -> AsyncIterator[AgentStack]:
    """The stack (``services``; None for all) with the stand-in as its provider, once the
    pool's first worker is registered with LiveKit."""
    data_dir = Path(tempfile.mkdtemp(prefix="mediai-bench-"))
    command = [sys.executable, "-m", "tests.standin.openai_server"]
    log = data_dir / "standin.log"
    try:
        async with process(command, dict(os.environ), log) as standin_pid:
            await logged(log, "listening on", 30)
            url = log.read_text().split("listening on ", 1)[1].split()[0]
            await script_standin(url)
            chosen = {"services": services} if services is not None else {}
            settings = stack_settings(
                data_dir, openai_base_url=url, openai_api_key="bench", **chosen, **overrides
            )
            stack = Stack(settings, services=list(services) if services is not None else None)
            state = await stack.start()
            try:
                bus = await connect_bus(settings, "bench", streams="skip")
                began = time.monotonic()
                await registered_workers(bus)
                await bus.close()
                print(
                    f"stack ready; first worker registered {time.monotonic() - began:.1f} s later"
                )
                headers = {"Authorization": f"Bearer {state.dev_api_key}"}
                async with httpx.AsyncClient(
                    base_url=state.gateway_url, timeout=30, headers=headers
                ) as api:
                    yield AgentStack(settings, state, url, standin_pid, api)
            finally:
                await stack.stop()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def bare_agent(stack: AgentStack) -> AsyncIterator[str]:
    """bench/bare_agent.py on the stack's LiveKit, once registered; yields its agent name."""
    async with bare_agent_process(stack) as (name, _pid):
        yield name


@contextlib.asynccontextmanager
async def bare_agent_process(stack: AgentStack) -> AsyncIterator[tuple[str, int]]:
    """bench/bare_agent.py on the stack's LiveKit, once registered; yields its agent name and
    its pid (its forkserver and job processes are its descendants)."""
    settings = stack.settings
    env = {
        **os.environ,
        "LIVEKIT_URL": settings.livekit_url,
        "LIVEKIT_API_KEY": settings.livekit_api_key,
        "LIVEKIT_API_SECRET": settings.livekit_api_secret,
        "OPENAI_API_KEY": "bench",
        "OPENAI_BASE_URL": stack.standin_url,
    }
    log = settings.data_dir / "bare-agent.log"
    async with process([sys.executable, "-m", "bench.bare_agent"], env, log) as pid:
        await logged(log, REGISTERED, 120)
        yield AGENT_NAME, pid


# -- figures -----------------------------------------------------------------------------------


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def stats(samples: list[float]) -> dict[str, float | int]:
    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "p50": round(statistics.median(samples), 4),
        "p90": round(percentile(samples, 0.9), 4),
        "p99": round(percentile(samples, 0.99), 4),
        "min": round(min(samples), 4),
        "max": round(max(samples), 4),
    }


def line(name: str, figures: dict[str, float | int], unit: str = "s") -> str:
    if not figures.get("n"):
        return f"  {name:<40} no samples"
    keys = ("p50", "p90", "p99", "min", "max")
    shown = "  ".join(f"{k} {figures[k]:6.2f}" for k in keys)
    return f"  {name:<40} {shown} {unit}  (n={figures['n']})"


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def write_record(name: str, record: dict[str, Any]) -> Path:
    """bench/results/<name>.json (``bench.records``)."""
    return records.write_record(RESULTS / f"{name}.json", record)
