"""How long an agent worker takes from process spawn to registered with LiveKit, MediAI's
against a bare livekit-agents worker's (bench/bare_worker.py), interleaved on the same servers.

Starts NATS, Postgres and LiveKit as ``mediai up`` does (no services: nothing else competes),
then ``--runs`` times each, alternating which goes first: spawn the worker as the pool does
(MediAI: ``python -m services.agent``, with the OpenAI-compatible provider configured so its
plugins are preloaded as in production; bare: ``python -m bench.bare_worker``), wait for
livekit-agents' own "registered worker" log line, note the CPU seconds its processes used
until then (the worker, its forkserver, its warm job process: the figure the machine's load
does not inflate), then SIGTERM it and wait for it to exit. livekit-agents registers once the
warm job process is ready, or after its initialize timeout without it (then the first dispatch
waits for a job process to start): the bench counts those runs.

Run: uv run python -m bench.worker_cold_start [--runs 10] [--checkout /work/main] (the latter
adds another checkout's worker, e.g. before a change, to the same interleaving). Prints figures; never fails on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from deploy.stack import Stack
from shared.config import Settings, to_environ
from tests.support import stack_settings

REGISTERED = b"registered worker"
# livekit-agents gave up waiting for the warm job process and registered without it: the first
# dispatch then waits for a job process to start.
NOT_WARM = b"timed out waiting for idle processes to initialize"
TIMEOUT = 300.0
TICKS = os.sysconf("SC_CLK_TCK")
TRACE = bool(os.environ.get("BENCH_TRACE"))  # print each worker's log lines, timed


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes of a process group."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            command = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ")[:90]
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
            if TRACE:
                used = (int(fields[11]) + int(fields[12])) / TICKS
                print(f"  {used:6.2f} CPU s  {command.decode(errors='replace')}")
    return total / TICKS


async def cold_start(
    command: list[str], env: dict[str, str], cwd: Path | None = None
) -> tuple[float, float, bool]:
    """(seconds from spawn to registered, CPU seconds used by then, whether it registered with
    its warm job process ready) of one worker."""
    warm = True
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(TIMEOUT):
            while REGISTERED not in (line := await process.stdout.readline()):
                if not line:
                    raise RuntimeError(f"{command[2]} exited before registering")
                warm = warm and NOT_WARM not in line
                if TRACE:
                    print(f"  {time.monotonic() - started:6.1f} s {line.decode()[:110]}", end="")
        elapsed = time.monotonic() - started
        return elapsed, group_cpu_seconds(process.pid), warm
    finally:
        process.send_signal(signal.SIGTERM)
        draining = asyncio.create_task(process.stdout.read())
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        draining.cancel()


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def line(name: str, samples: list[float], unit: str = "s") -> str:
    return (
        f"  {name:<44} p50 {statistics.median(samples):6.2f} {unit}  "
        f"p90 {percentile(samples, 0.9):6.2f} {unit}  "
        f"min {min(samples):6.2f}  max {max(samples):6.2f}  (n={len(samples)})"
    )


def environments(settings: Settings) -> dict[str, dict[str, str]]:
    mediai = {**os.environ, **to_environ(settings), "MEDIAI_AGENT_WORKER_ID": "bench-cold"}
    bare = {
        **os.environ,
        "LIVEKIT_URL": settings.livekit_url,
        "LIVEKIT_API_KEY": settings.livekit_api_key,
        "LIVEKIT_API_SECRET": settings.livekit_api_secret,
    }
    return {"mediai": mediai, "bare": bare}


async def main(runs: int, checkout: Path | None) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="mediai-bench-"))
    settings = stack_settings(data_dir, openai_base_url="http://127.0.0.1:9", openai_api_key="x")
    stack = Stack(settings, services=[])
    await stack.start()
    commands = {
        "mediai": [sys.executable, "-m", "services.agent"],
        "bare": [sys.executable, "-m", "bench.bare_worker"],
    }
    envs = environments(settings)
    names = ["mediai", "bare"]
    if checkout is not None:  # another checkout's worker, as its own pool started it
        names.append("checkout")
        commands["checkout"] = [str(checkout / ".venv/bin/python"), "-m", "deploy", "agent-worker"]
        envs["checkout"] = envs["mediai"]
    seconds: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    cold: dict[str, int] = {name: 0 for name in names}
    load: Callable[[], float] = lambda: os.getloadavg()[0]  # noqa: E731
    loads = [load()]
    try:
        for run in range(runs):
            order = names if run % 2 == 0 else names[::-1]
            for name in order:
                cwd = checkout if name == "checkout" else None
                elapsed, used, warm = await cold_start(commands[name], envs[name], cwd)
                seconds[name].append(elapsed)
                cpu[name].append(used)
                cold[name] += not warm
                loads.append(load())
                note = "" if warm else " (no warm job process yet)"
                print(f"run {run + 1} {name}: {elapsed:.2f} s, {used:.2f} CPU s{note}", flush=True)
    finally:
        await stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    print(f"\nspawn -> registered with LiveKit, {runs} interleaved runs each")
    print(f"(load average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs)")
    print(line("MediAI worker (python -m services.agent)", seconds["mediai"]))
    print(line("bare livekit-agents worker", seconds["bare"]))
    ratio = statistics.median(seconds["mediai"]) / statistics.median(seconds["bare"])
    print(f"  ratio MediAI / bare (p50): x{ratio:.2f}")
    print(line("MediAI CPU until registered", cpu["mediai"], "s"))
    print(line("bare CPU until registered", cpu["bare"], "s"))
    cpu_ratio = statistics.median(cpu["mediai"]) / statistics.median(cpu["bare"])
    print(f"  ratio MediAI / bare CPU (p50): x{cpu_ratio:.2f}")
    for name in names:
        print(f"  {name}: registered before its warm job process was ready in {cold[name]}/{runs}")
    if checkout is not None:
        print(line(f"{checkout} worker", seconds["checkout"]))
        print(line(f"{checkout} CPU until registered", cpu["checkout"], "s"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument(
        "--checkout", type=Path, help="also time this checkout's worker (e.g. /work/main)"
    )
    arguments = parser.parse_args()
    asyncio.run(main(arguments.runs, arguments.checkout))
