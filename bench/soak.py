"""A soak: consultations at a fixed concurrency for a duration, on the whole local stack, to see
whether anything grows that should stay flat.

``--patients K`` slots each run one consultation after another (bench/consultation.py:
a patient joins a new room, ``POST /v1/agents``, ``--turns`` sentences answered, the patient
leaves, the agent is sent away; a dispatch refused at capacity is tried again after its
Retry-After). Every ``--every`` seconds (a minute) it samples, per part of the stack (its process
and its descendants: the pool's include the agent workers and their job processes), resident
memory (RSS and USS) and open file descriptors; NATS consumer lag (``num_pending`` of every
durable consumer); and PostgreSQL's table sizes. At the end it prints the first and last
samples and the change, and writes bench/results/soak.json with every sample.

Run: uv run python -m bench.soak --minutes 60 --patients 4 (half the default pool's capacity,
2 workers x 4 jobs). Not part of CI or `make bench`; never fails on what it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import asyncpg

from bench import procs
from bench.agentstack import AgentStack, agent_stack, load_average, write_record
from bench.consultation import MediAI, Outcome, consult
from shared.bus import Bus, connect_bus

RETRY_SECONDS = 2.0


def memory_by_part(stack: AgentStack) -> dict[str, dict[str, float]]:
    """Per part of the stack: RSS and USS (MiB) and open file descriptors, with descendants."""
    tree = procs.children_by_parent()
    found: dict[str, dict[str, float]] = {}
    for part in stack.state.parts:
        if part.pid is None:
            continue
        usages = [procs.usage(pid) for pid in (part.pid, *procs.descendants(part.pid, tree))]
        found[part.name] = {
            "processes": len(usages),
            "rss_mib": round(procs.mib(sum(u.rss for u in usages)), 1),
            "uss_mib": round(procs.mib(sum(u.uss for u in usages)), 1),
            "fds": sum(u.fds for u in usages),
        }
    return found


async def consumer_lag(bus: Bus) -> dict[str, int]:
    """``stream/consumer`` -> messages not yet delivered, for every durable consumer."""
    lag: dict[str, int] = {}
    for stream in await bus.js.streams_info():
        for consumer in await bus.js.consumers_info(stream.config.name or ""):
            if consumer.config.durable_name:
                lag[f"{stream.config.name}/{consumer.name}"] = consumer.num_pending or 0
    return lag


async def table_sizes(database_url: str) -> dict[str, int]:
    """``schema.table`` -> bytes on disk, indexes and TOAST included."""
    connection = await asyncpg.connect(database_url)
    try:
        rows = await connection.fetch(
            "SELECT schemaname || '.' || relname AS name, pg_total_relation_size(relid) AS size"
            " FROM pg_stat_user_tables"
        )
    finally:
        await connection.close()
    return {row["name"]: row["size"] for row in rows}


async def sample(stack: AgentStack, bus: Bus, began: float) -> dict[str, Any]:
    return {
        "minute": round((time.monotonic() - began) / 60, 2),
        "load_average": load_average(),
        "parts": memory_by_part(stack),
        "consumer_lag": await consumer_lag(bus),
        "table_bytes": await table_sizes(stack.settings.database_url),
    }


class Slots:
    """K patients, each in one consultation after another until the deadline."""

    def __init__(self, stack: AgentStack, turns: int, deadline: float) -> None:
        self.stack, self.turns, self.deadline = stack, turns, deadline
        self.outcomes: list[Outcome] = []

    async def run(self) -> None:
        while time.monotonic() < self.deadline:
            try:
                outcome = await consult(self.stack.api, MediAI(self.stack.api), self.turns)
            except Exception as error:  # noqa: BLE001 - counted; an hour's soak goes on
                outcome = Outcome("mediai", status=f"error {type(error).__name__}")
            self.outcomes.append(outcome)
            if outcome.status == "refused":
                await asyncio.sleep(RETRY_SECONDS)  # the 503's Retry-After


def flat_view(found: dict[str, Any]) -> dict[str, float]:
    """The figures whose first and last are compared, by name."""
    view: dict[str, float] = {}
    for part, figures in found["parts"].items():
        for name in ("rss_mib", "uss_mib", "fds"):
            view[f"{part} {name}"] = figures[name]
    lag = found["consumer_lag"]
    view["NATS consumer lag, total"] = sum(lag.values())
    view["NATS consumer lag, largest"] = max(lag.values(), default=0)
    tables = found["table_bytes"]
    view["PostgreSQL tables, total MiB"] = round(procs.mib(sum(tables.values())), 2)
    for name, size in sorted(tables.items(), key=lambda item: -item[1])[:5]:
        view[f"table {name} MiB"] = round(procs.mib(size), 3)
    return view


def report(samples: list[dict[str, Any]]) -> None:
    """The first sample under load (the one at minute 0 is the idle stack, kept in the record)
    against the last."""
    under_load = samples[1] if len(samples) > 2 else samples[0]
    first, last = flat_view(under_load), flat_view(samples[-1])
    minutes = f"minute {under_load['minute']:.1f}", f"minute {samples[-1]['minute']:.1f}"
    print(f"\n{'':<44} {minutes[0]:>10} {minutes[1]:>10} {'change':>10}")
    for name in sorted(set(first) | set(last)):
        a, b = first.get(name, 0.0), last.get(name, 0.0)
        print(f"{name:<44} {a:>10.1f} {b:>10.1f} {b - a:>+10.1f}")


async def main(minutes: float, patients: int, turns: int, every: float) -> None:
    async with agent_stack(services=None) as stack:
        bus = await connect_bus(stack.settings, "bench", streams="skip")
        began = time.monotonic()
        slots = Slots(stack, turns, began + minutes * 60)
        running = [asyncio.create_task(slots.run()) for _ in range(patients)]
        samples = [await sample(stack, bus, began)]
        try:
            while not all(task.done() for task in running):
                await asyncio.wait(running, timeout=every)
                samples.append(await sample(stack, bus, began))
                done = len(slots.outcomes)
                print(
                    f"  minute {samples[-1]['minute']:6.2f}: {done} consultations, "
                    f"load {samples[-1]['load_average']:.1f}",
                    flush=True,
                )
        finally:
            await bus.close()
    statuses: dict[str, int] = {}
    for outcome in slots.outcomes:
        statuses[outcome.status] = statuses.get(outcome.status, 0) + 1
    print(f"soak: {minutes} min, {patients} patients at once, {statuses}")
    report(samples)
    settings = {"minutes": minutes, "patients": patients, "turns": turns, "every": every}
    path = write_record("soak", {**settings, "outcomes": statuses, "samples": samples})
    print(f"record: {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--patients", type=int, default=4, help="consultations at once")
    parser.add_argument("--turns", type=int, default=3, help="sentences per consultation")
    parser.add_argument("--every", type=float, default=60.0, help="seconds between samples")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.minutes, arguments.patients, arguments.turns, arguments.every))
