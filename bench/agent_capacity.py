"""How many consultations one worker host carries: at each ``--patients`` level, N patients join
N rooms, N agents are dispatched at once (``POST /v1/agents``), and each patient speaks the same
sentence ``--turns`` times (bench/consultation.py); the stand-in provider answers at once.

Per level: answer latency p50/p90, dispatches refused at once (503 ``agents_at_capacity``)
and dispatches accepted that then brought no agent, the CPU of the agents (the pool's workers,
forkservers and job processes) apart from the simulated patients' (this process), the stand-in
provider's and LiveKit's, and the pool's memory (USS and PSS per job process and in total). The
pool runs with its default limits (printed): the levels above them show the refusals. Levels
run one after the other on the same stack, each once the previous one's sessions have ended.

Run: uv run python -m bench.agent_capacity [--patients 1,5,10,20,30] [--turns 3]. Prints a
table, writes bench/results/agent_capacity.json; never fails on speed. For a soak at a fixed
concurrency, see bench/soak.py.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Callable
from typing import Any

from nats.js.api import ConsumerConfig, DeliverPolicy

from bench.agentstack import AgentStack, agent_stack, load_average, stats, write_record
from bench.consultation import Consultation, MediAI, Outcome, consult
from bench.pool_usage import CpuMeter, memory
from shared import subjects
from shared.bus import Bus, connect_bus
from shared.events import CODEC
from shared.events.agents import AgentWorkerExited, AgentWorkerLoadReported
from shared.naming import SYSTEM_TENANT
from tests.support import until
from tests.test_agent_e2e import speech

IDLE_TIMEOUT = 90.0


class PoolLoad:
    """The jobs every live worker last reported (AgentWorkerLoadReported), followed on the bus."""

    def __init__(self) -> None:
        self.jobs: dict[str, int] = {}
        self._subscriptions: list[Any] = []

    async def follow(self, bus: Bus) -> None:
        async def on_message(message: Any) -> None:
            data = CODEC.decode(message.data).data
            if isinstance(data, AgentWorkerLoadReported):
                self.jobs[data.worker_id] = data.active_jobs
            elif isinstance(data, AgentWorkerExited):
                self.jobs.pop(data.worker_id, None)

        for kind in (AgentWorkerLoadReported, AgentWorkerExited):
            self._subscriptions.append(
                await bus.js.subscribe(
                    subjects.type_filter(kind, SYSTEM_TENANT),
                    cb=on_message,
                    ordered_consumer=True,
                    config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
                )
            )

    async def idle(self) -> None:
        """Once no worker reports a job (a freed slot is reported once LiveKit knows it)."""
        await until(lambda: not any(self.jobs.values()), IDLE_TIMEOUT, step=0.2)


def limits(stack: AgentStack) -> dict[str, int]:
    s = stack.settings
    return {
        "MEDIAI_AGENT_POOL_MIN": s.agent_pool_min,
        "MEDIAI_AGENT_POOL_MAX": s.agent_pool_max,
        "MEDIAI_AGENT_JOBS_PER_WORKER": s.agent_jobs_per_worker,
        "MEDIAI_AGENT_IDLE_PROCESSES": s.agent_idle_processes,
    }


def counts(outcomes: list[Outcome]) -> dict[str, int]:
    found = {"answered": 0, "refused": 0, "no_agent": 0, "unanswered": 0}
    for outcome in outcomes:
        found[outcome.status] += 1
    return found


async def level(
    stack: AgentStack, patients: int, turns: int, on_loaded: Callable[[], Any] | None = None
) -> dict[str, Any]:
    """One level: the figures of ``patients`` consultations at once."""
    pcm = speech()
    consultations = [Consultation(stack.api, MediAI(stack.api), pcm) for _ in range(patients)]
    await asyncio.gather(*(c.join() for c in consultations))
    meter = CpuMeter(stack)
    meter.start()
    began = time.monotonic()
    try:
        outcomes = list(await asyncio.gather(*(c.run(turns) for c in consultations)))
        cores = await meter.stop()
        held = memory(stack)  # the sessions still running: the memory they hold
    finally:
        await asyncio.gather(*(c.close() for c in consultations), return_exceptions=True)
    answers = [a for o in outcomes for a in o.answers]
    joins = [o.join_seconds for o in outcomes if o.join_seconds is not None]
    refusals = sorted({o.code for o in outcomes if o.status == "refused"})
    failures = sorted({o.code for o in outcomes if o.status == "no_agent"})
    return {
        "patients": patients,
        "turns": turns,
        "seconds": round(time.monotonic() - began, 1),
        "load_average": load_average(),
        "outcomes": counts(outcomes),
        "refusal_codes": refusals,
        "no_agent_states": failures,
        "answer": stats(answers),
        "join": stats(joins),
        "cores": cores,
        "memory_mib": held,
    }


def row(found: dict[str, Any]) -> str:
    o, a, c, m = found["outcomes"], found["answer"], found["cores"], found["memory_mib"]
    answer = f"{a['p50']:5.2f} / {a['p90']:5.2f}" if a.get("n") else "    -        "
    return (
        f"{found['patients']:>8} | {o['answered']:>8} | {o['refused']:>7} | {o['no_agent']:>8} "
        f"| {o['unanswered']:>10} | {answer} ({a.get('n', 0):>3}) | {c['agents']:5.2f} "
        f"| {c['patients (this bench)']:8.2f} | {c['stand-in provider']:7.2f} "
        f"| {c['livekit']:7.2f} | {m['job_processes']:>4} | {m['job_uss_p50']:6.1f} / "
        f"{m['job_pss_p50']:6.1f} | {m['total_uss']:7.1f} / {m['total_pss']:7.1f} "
        f"| {found['load_average']:5.2f}"
    )


HEADER = (
    "patients | answered | refused | no agent | unanswered | answer p50 / p90 s (n)  "
    "| agents cores | patients | stand-in | livekit | jobs | job USS / PSS MiB "
    "| pool USS / PSS MiB | load"
)


async def main(levels: list[int], turns: int) -> None:
    async with agent_stack() as stack:
        pool = limits(stack)
        print("pool limits (defaults): " + ", ".join(f"{k}={v}" for k, v in pool.items()))
        bus = await connect_bus(stack.settings, "bench", streams="skip")
        load = PoolLoad()
        await load.follow(bus)
        try:
            await consult(stack.api, MediAI(stack.api))  # warm-up: a worker's first job
            found = []
            print(HEADER, flush=True)
            for patients in levels:
                await load.idle()
                found.append(await level(stack, patients, turns))
                print(row(found[-1]), flush=True)
                notes = found[-1]["refusal_codes"] + found[-1]["no_agent_states"]
                if notes:
                    print(f"         refused with / dispatches without agent ended: {notes}")
        finally:
            await bus.close()
    path = write_record("agent_capacity", {"pool_limits": pool, "levels": found})
    print(f"record: {path}")


def patient_levels(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=patient_levels, default=[1, 5, 10, 20, 30])
    parser.add_argument("--turns", type=int, default=3, help="sentences each patient says")
    arguments = parser.parse_args()
    asyncio.run(main(arguments.patients, arguments.turns))
