"""How long `mediai up` takes to be ready, cold (new data folder) and warm, and to stop.

Run: uv run python -m bench.stack_startup [--runs 3] [--without-zipkin]. Prints figures (and the
Zipkin part alone: its JVM's start and stop); never fails on speed.
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
from pathlib import Path

from deploy.stack import child_environ, zipkin_part
from deploy.supervisor import Supervisor
from tests.support import stack_settings


async def start_and_stop(data_dir: Path, zipkin: bool) -> tuple[float, float]:
    settings = stack_settings(data_dir, zipkin=zipkin)
    began = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "deploy",
        "up",
        env={**os.environ, **child_environ(settings)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    async with asyncio.timeout(300):
        while not (line := await process.stdout.readline()).startswith(b"MediAI is ready"):
            if not line:
                raise SystemExit(f"mediai up failed; see {data_dir}/logs")
    ready = time.perf_counter() - began
    began = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    await process.communicate()
    return ready, time.perf_counter() - began


async def zipkin_alone(data_dir: Path) -> tuple[float, float]:
    """The Zipkin part alone, as the stack starts it: seconds to ready, and to stop."""
    settings = stack_settings(data_dir, zipkin=True)
    supervisor = Supervisor(settings.host, data_dir / "logs")
    began = time.perf_counter()
    await supervisor.start(zipkin_part(settings))
    ready = time.perf_counter() - began
    began = time.perf_counter()
    await supervisor.stop()
    return ready, time.perf_counter() - began


async def main(runs: int, zipkin: bool) -> None:
    cold, warm, stops, jvm = [], [], [], []
    for _ in range(runs):
        data_dir = Path(tempfile.mkdtemp(prefix="mediai-bench-"))
        try:
            ready, stop = await start_and_stop(data_dir, zipkin)
            cold.append(ready)
            stops.append(stop)
            ready, stop = await start_and_stop(data_dir, zipkin)
            warm.append(ready)
            stops.append(stop)
            if zipkin:
                jvm.append(await zipkin_alone(data_dir))
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
    services = os.environ.get("MEDIAI_SERVICES") or "all services"
    tracing = "with Zipkin" if zipkin else "without Zipkin"
    print(f"mediai up to ready ({services}, {tracing}, LiveKit already built), {runs} runs each:")
    print(
        f"  cold (new data folder): median {statistics.median(cold):.2f}s  "
        f"min {min(cold):.2f}s  max {max(cold):.2f}s"
    )
    print(
        f"  warm (existing data):   median {statistics.median(warm):.2f}s  "
        f"min {min(warm):.2f}s  max {max(warm):.2f}s"
    )
    print(
        f"  stop on SIGTERM:        median {statistics.median(stops):.2f}s  max {max(stops):.2f}s"
    )
    if jvm:
        alone = [ready for ready, _ in jvm]
        print(
            f"  Zipkin alone to ready:  median {statistics.median(alone):.2f}s  "
            f"min {min(alone):.2f}s  max {max(alone):.2f}s; "
            f"stop max {max(stop for _, stop in jvm):.2f}s"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--without-zipkin", action="store_true", help="as MEDIAI_ZIPKIN=false")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.runs, zipkin=not arguments.without_zipkin))
