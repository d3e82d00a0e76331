"""Billing replays on this machine against a bare nats-py replay of the same stream.

    uv run python -m bench.billing_replay [--events 1000000] [--runs 2]

Starts a private NATS and Postgres (the same parts and configs as ``mediai up``) in a
temporary folder, publishes ``--events`` usage-bearing events of one tenant spread over one
billing month (``bench.replay_events``), then, ``--runs`` times in turn: MediAI's full rebuild
(``rebuild``, split across processes as the CLI runs it), the audit of that month
(``run_audit``, likewise), with ``--one-process`` the rebuild in one process, and the bare baseline
(``bench.bare_replay``: a nats-py ordered consumer, the same fold, rows written with COPY).
Prints events/s per run, medians and ratios to the baseline, and writes a JSON record
(``--json``). Never fails on speed; stops by itself (``--budget`` seconds at most).

The stack's NATS fsyncs every write (``sync_interval: always``); the data folder goes under
``--data-root`` (default /dev/shm, memory-backed, where an fsync returns at once) so that making
a million events takes minutes, not the better part of an hour. Reading is unaffected.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg

from bench.bare_replay import bare_replay
from bench.cpu import cpu_seconds
from bench.replay_events import MONTH, TENANT, consultations, publish
from deploy.stack import nats_part, postgres_part
from deploy.supervisor import Supervisor
from services.billing.audit import run_audit
from services.billing.periods import month_period
from services.billing.rebuild import rebuild
from shared.bus import Bus, connect_bus
from shared.config import Settings
from shared.db import create_pool
from tests.support import stack_settings

BARE = "bare nats-py ordered consumer + COPY"
Measure = Callable[[], Awaitable[tuple[int, float]]]


def measures(
    settings: Settings, bus: Bus, pool: asyncpg.Pool, zone: ZoneInfo, one_process: bool
) -> dict[str, Measure]:
    async def split_rebuild() -> tuple[int, float]:
        result = await rebuild(pool, bus, zone, split=settings)
        print(
            f"  (replay {result.replay_seconds:.1f}s, writing the projection "
            f"{result.seconds - result.replay_seconds:.1f}s)"
        )
        return result.replay.events, result.seconds

    async def one_process_rebuild() -> tuple[int, float]:
        result = await rebuild(pool, bus, zone)
        return result.replay.events, result.seconds

    async def audit() -> tuple[int, float]:
        started = time.monotonic()
        report = await run_audit(
            pool,
            bus,
            tenant=TENANT,
            period=month_period(MONTH, zone),
            zone=zone,
            lookback=timedelta(seconds=settings.billing_audit_lookback),
            split=settings,
        )
        if not report.matches:
            raise RuntimeError("the audit found differences after a rebuild")
        return report.replay.events, time.monotonic() - started

    async def bare() -> tuple[int, float]:
        return await bare_replay(settings)

    found = {
        "MediAI rebuild (split across processes)": split_rebuild,
        "MediAI audit of the month (split)": audit,
        "MediAI rebuild (one process)": one_process_rebuild,
        BARE: bare,
    }
    if not one_process:
        del found["MediAI rebuild (one process)"]
    return found


async def main(
    events: int, runs: int, data_root: str | None, record: Path, one_process: bool
) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="mediai-bench-", dir=data_root))
    # Postgres runs as its own system user when we are root: it must reach its data folder.
    os.chmod(data_dir, 0o755)  # noqa: S103 - a private temporary folder of this benchmark
    settings = stack_settings(data_dir)
    zone = ZoneInfo(settings.billing_timezone)
    supervisor = Supervisor(settings.host, data_dir / "logs")
    try:
        for part in (nats_part(settings), postgres_part(settings)):
            await supervisor.start(part)
        bus = await connect_bus(settings, "bench", streams="create")
        pool = await create_pool(settings, max_size=4, statement_timeout=None)
        print(f"publishing {events:,} usage events of one tenant over {MONTH} ...", flush=True)
        published = await publish(bus, consultations(events, zone), events)
        print(f"  {published:.0f}s ({events / published:,.0f} events/s, asynchronous acks)")
        rates: dict[str, list[float]] = {}
        per_cpu: dict[str, list[float]] = {}
        for run in range(1, runs + 1):
            for name, measure in measures(settings, bus, pool, zone, one_process).items():
                cpu_before = cpu_seconds()
                count, seconds = await measure()
                cpu = cpu_seconds() - cpu_before
                rates.setdefault(name, []).append(count / seconds)
                per_cpu.setdefault(name, []).append(count / cpu)
                print(
                    f"run {run} {name}: {count:,} events in {seconds:.1f}s = "
                    f"{count / seconds:,.0f} events/s; {cpu:.1f} CPU-s = "
                    f"{count / cpu:,.0f} events per CPU-second; load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
        await pool.close()
        await bus.close()
    finally:
        await supervisor.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    report(rates, per_cpu, events, runs, published, record)


def report(
    rates: dict[str, list[float]],
    per_cpu: dict[str, list[float]],
    events: int,
    runs: int,
    published: float,
    record: Path,
) -> None:
    bare = statistics.median(rates[BARE])
    print(
        f"\n{'what':<42} {'runs':>4} {'median ev/s':>12} {'min-max':>17} {'× bare':>7}"
        f" {'ev/CPU-s':>9}"
    )
    for name, values in rates.items():
        median = statistics.median(values)
        print(
            f"{name:<42} {len(values):>4} {median:>12,.0f} "
            f"{min(values):>8,.0f}-{max(values):<8,.0f} {median / bare:>7.2f}"
            f" {statistics.median(per_cpu[name]):>9,.0f}"
        )
    load = os.getloadavg()
    machine = {
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "load_average": [round(x, 1) for x in load],
    }
    print(f"machine: {machine}")
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(
        json.dumps(
            {
                "benchmark": "billing_replay",
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "events": events,
                "runs": runs,
                "publish_events_per_second": round(events / published),
                "events_per_second": {k: [round(v) for v in vs] for k, vs in rates.items()},
                "median_events_per_second": {
                    k: round(statistics.median(vs)) for k, vs in rates.items()
                },
                "events_per_cpu_second": {k: [round(v) for v in vs] for k, vs in per_cpu.items()},
                "ratio_to_bare": {
                    k: round(statistics.median(vs) / bare, 2) for k, vs in rates.items()
                },
                "machine": machine,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"record: {record}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument(
        "--data-root",
        default="/dev/shm" if os.path.isdir("/dev/shm") else None,  # noqa: S108 - memory-backed
        help="Where the temporary data folder goes.",
    )
    parser.add_argument("--json", type=Path, default=Path("bench/results/billing_replay.json"))
    parser.add_argument(
        "--one-process", action="store_true", help="Also time the rebuild in one process."
    )
    parser.add_argument("--budget", type=float, default=3600.0, help="Give up after this long.")
    arguments = parser.parse_args()

    async def bounded() -> None:
        async with asyncio.timeout(arguments.budget):
            await main(
                arguments.events,
                arguments.runs,
                arguments.data_root,
                arguments.json,
                arguments.one_process,
            )

    asyncio.run(bounded())
