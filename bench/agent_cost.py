"""What one consultation costs the agent host, MediAI against a bare livekit-agents voice agent at
the same load: at each ``--patients`` level, N patients join N rooms, N agents of one side are
dispatched at once and each patient speaks the same sentence ``--turns`` times
(bench/consultation.py); then the same for the other side, on the same stack, stand-in provider
and speech (bench/agent_latency.py's pair: MediAI's ``generic`` role and bench/bare_agent.py).

Per level and side: the cores of the side's processes (workers, forkservers, job processes)
and of its job processes alone (also per session: the sessions' processes and the warm ones
forked to replace them), sampled from /proc every second; per busy job process (one in a room)
its cores and its unique and proportional memory (USS / PSS) at the end of the conversations.

Run: uv run python -m bench.agent_cost [--patients 1,3] [--turns 3]. Prints a table, writes
bench/results/agent_cost.json; never fails on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from pathlib import Path
from typing import Any

from livekit import api as lk

from bench import procs
from bench.agentstack import (
    AgentStack,
    agent_stack,
    bare_agent_process,
    load_average,
    stats,
    write_record,
)
from bench.consultation import Bare, Consultation, MediAI, Side, consult
from bench.pool_usage import PoolTree, workers_tree
from shared.livekit_api import livekit_api
from tests.test_agent_e2e import speech

# A job process in a room has webrtc's threads (a warm one waiting for a job has none).
ROOM_THREAD = "network_thread"
# After a level, until the ended sessions' processes are gone and the warm ones settle.
SETTLE_SECONDS = 8.0


def in_room(pid: int) -> bool:
    """Whether a job process runs a session (is in a room)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        return any((task / "comm").read_text().strip() == ROOM_THREAD for task in tasks)
    except OSError:
        return False


class TreeMeter(procs.CpuSampler):
    """CPU seconds of a side's processes (``tree()`` names them, again at every sample)."""

    def __init__(self, tree: Any) -> None:
        super().__init__()
        self.tree = tree
        self.jobs: set[int] = set()
        self.busy: set[int] = set()
        self.latest: PoolTree | None = None

    def sample(self) -> PoolTree:
        found: PoolTree = self.tree()
        self.jobs.update(found.jobs)
        self.busy.update(pid for pid in found.jobs if in_room(pid))
        self.record(found.all)
        self.latest = found
        return found

    def stop(self) -> dict[str, Any]:
        wall = self.halt()
        now = self.latest
        assert now is not None
        busy = [pid for pid in now.jobs if pid in self.busy]
        memory = [procs.usage(pid) for pid in busy]

        def median(values: list[float]) -> float:
            return round(statistics.median(values), 3) if values else 0.0

        return {
            "seconds": round(wall, 1),
            "cores_all": round(sum(self.used(p) for p in self.last) / wall, 3),
            "cores_jobs": round(sum(self.used(p) for p in self.jobs) / wall, 3),
            "busy_jobs": len(busy),
            "busy_job_cores_p50": median([self.used(p) / wall for p in busy]),
            "busy_job_uss_mib_p50": median([procs.mib(u.uss) for u in memory]),
            "busy_job_pss_mib_p50": median([procs.mib(u.pss) for u in memory]),
            "job_processes": len(now.jobs),
        }


async def level(
    stack: AgentStack, side: Side, tree: Any, patients: int, turns: int
) -> dict[str, Any]:
    pcm = speech()
    consultations = [Consultation(stack.api, side, pcm) for _ in range(patients)]
    await asyncio.gather(*(c.join() for c in consultations))
    meter = TreeMeter(tree)
    meter.start()
    try:
        outcomes = list(await asyncio.gather(*(c.run(turns) for c in consultations)))
        found = meter.stop()  # the sessions still running: the memory they hold
    finally:
        await asyncio.gather(*(c.close() for c in consultations), return_exceptions=True)
    answers = [a for o in outcomes for a in o.answers]
    answered = sum(1 for o in outcomes if o.status == "answered")
    return {
        "side": side.name,
        "patients": patients,
        "answered": answered,
        "answer": stats(answers),
        "load_average": load_average(),
        **found,
        # every job process (the sessions' and the warm ones forked to replace them) per
        # session: what a consultation costs the host
        "cores_jobs_per_session": round(found["cores_jobs"] / patients, 3),
    }


def row(found: dict[str, Any]) -> str:
    a = found["answer"]
    answer = f"{a['p50']:5.2f}" if a.get("n") else "  -  "
    return (
        f"{found['side']:>6} | {found['patients']:>8} | {found['answered']:>8} | {answer} "
        f"| {found['cores_all']:5.3f} | {found['cores_jobs']:5.3f} "
        f"| {found['cores_jobs_per_session']:5.3f} "
        f"| {found['busy_job_cores_p50']:5.3f} | {found['busy_job_uss_mib_p50']:6.1f} / "
        f"{found['busy_job_pss_mib_p50']:6.1f} | {found['busy_jobs']:>4} | "
        f"{found['load_average']:5.2f}"
    )


HEADER = (
    "  side | patients | answered | p50 s | cores all | cores jobs | jobs per session "
    "| per busy job "
    "| busy job USS / PSS MiB | busy | load"
)


async def main(levels: list[int], turns: int) -> None:
    found: list[dict[str, Any]] = []
    async with agent_stack() as stack, bare_agent_process(stack) as (agent_name, bare_pid):
        livekit: lk.LiveKitAPI = livekit_api(stack.settings)
        pool = stack.part_pid("pool")
        sides: list[tuple[Side, Any]] = [
            (MediAI(stack.api), lambda: workers_tree(procs.children_by_parent().get(pool, []))),
            (Bare(livekit, agent_name), lambda: workers_tree([bare_pid])),
        ]
        try:
            for side, _ in sides:  # a warm-up each: the first job of a worker pays for imports
                await consult(stack.api, side)
            print(HEADER, flush=True)
            for patients in levels:
                for side, tree in sides:
                    await asyncio.sleep(SETTLE_SECONDS)
                    found.append(await level(stack, side, tree, patients, turns))
                    print(row(found[-1]), flush=True)
        finally:
            await livekit.aclose()
    path = write_record("agent_cost", {"turns": turns, "levels": found})
    print(f"record: {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", default="1,3", help="comma list of concurrent sessions")
    parser.add_argument("--turns", type=int, default=3, help="sentences each patient says")
    arguments = parser.parse_args()
    chosen = [int(part) for part in arguments.patients.split(",") if part.strip()]
    asyncio.run(main(chosen, arguments.turns))
