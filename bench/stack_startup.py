"""How long `mediai up` takes to be ready, cold (new data folder) and warm, and to stop.

Run: uv run python -m bench.stack_startup [--runs 3]. Prints figures; never fails on speed.
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

from deploy.stack import child_environ
from tests.support import stack_settings


async def start_and_stop(data_dir: Path) -> tuple[float, float]:
    settings = stack_settings(data_dir)
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


async def main(runs: int) -> None:
    cold, warm, stops = [], [], []
    for _ in range(runs):
        data_dir = Path(tempfile.mkdtemp(prefix="mediai-bench-"))
        try:
            ready, stop = await start_and_stop(data_dir)
            cold.append(ready)
            stops.append(stop)
            ready, stop = await start_and_stop(data_dir)
            warm.append(ready)
            stops.append(stop)
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)
    services = os.environ.get("MEDIAI_SERVICES") or "all services"
    print(f"mediai up to ready ({services}, LiveKit already built), {runs} runs each:")
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main(parser.parse_args().runs))
