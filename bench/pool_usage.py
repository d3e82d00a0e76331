"""The CPU and memory of a consultation load, by who spent them: the agents (the pool's workers,
their forkservers and job processes), the pool service itself, the simulated patients (this
bench process), the stand-in provider, LiveKit, and the rest of the stack. Sampled from /proc
once a second while the load runs, so processes that start or end meanwhile are counted too.
"""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass
from typing import Any

from bench import procs
from bench.agentstack import AgentStack

FORKSERVER = "multiprocessing.forkserver"


@dataclass(frozen=True)
class PoolTree:
    """The pool's processes at one instant, by kind."""

    workers: list[int]
    forkservers: list[int]
    jobs: list[int]  # job processes, busy or warm
    others: list[int]  # e.g. multiprocessing's resource tracker

    @property
    def all(self) -> list[int]:
        return [*self.workers, *self.forkservers, *self.jobs, *self.others]


def pool_tree(pool_pid: int) -> PoolTree:
    tree = procs.children_by_parent()
    return workers_tree(tree.get(pool_pid, []), tree)


def workers_tree(workers: list[int], tree: dict[int, list[int]] | None = None) -> PoolTree:
    """Agent workers' processes (any livekit-agents worker: the pool's or a bare one)."""
    tree = procs.children_by_parent() if tree is None else tree
    forkservers: list[int] = []
    jobs: list[int] = []
    others: list[int] = []
    for worker in workers:
        for child in tree.get(worker, []):
            if FORKSERVER in procs.cmdline(child):
                forkservers.append(child)
                jobs += procs.descendants(child, tree)
            else:
                others += [child, *procs.descendants(child, tree)]
    return PoolTree(workers, forkservers, jobs, others)


def groups(stack: AgentStack) -> dict[str, list[int]]:
    """Who is who now: the pid of every process of each group."""
    pool = stack.part_pid("pool")
    livekit = [p.pid for p in stack.state.parts if p.name.startswith("livekit") and p.pid]
    tree = procs.children_by_parent()
    named = {"agents": pool_tree(pool).all, "pool service": [pool], "livekit": livekit}
    named["patients (this bench)"] = [os.getpid()]
    named["stand-in provider"] = [stack.standin_pid, *procs.descendants(stack.standin_pid, tree)]
    taken = {pid for pids in named.values() for pid in pids}
    rest = [
        pid
        for part in stack.state.parts
        if part.pid is not None
        for pid in (part.pid, *procs.descendants(part.pid, tree))
        if pid not in taken
    ]
    named["rest of the stack"] = rest
    return named


class CpuMeter(procs.CpuSampler):
    """CPU seconds per group between ``start`` and ``stop``."""

    def __init__(self, stack: AgentStack) -> None:
        super().__init__()
        self.stack = stack
        self.members: dict[str, set[int]] = {}
        self.wall = 0.0

    def sample(self) -> None:
        for name, pids in groups(self.stack).items():
            self.members.setdefault(name, set()).update(pids)
            self.record(pids)

    async def stop(self) -> dict[str, float]:
        """Cores used per group on average (CPU seconds / wall seconds)."""
        self.wall = self.halt()
        used = {name: sum(self.used(p) for p in pids) for name, pids in self.members.items()}
        return {name: round(seconds / self.wall, 3) for name, seconds in used.items()}


def memory(stack: AgentStack) -> dict[str, Any]:
    """The pool's memory now (MiB): per job process (median and largest USS/PSS), and the
    whole pool (workers, forkservers, job processes) in total."""
    tree = pool_tree(stack.part_pid("pool"))
    jobs = [procs.usage(pid) for pid in tree.jobs]
    everything = [procs.usage(pid) for pid in tree.all]

    def mib(values: list[int]) -> float:
        return round(procs.mib(statistics.median(values)), 1) if values else 0.0

    return {
        "workers": len(tree.workers),
        "job_processes": len(jobs),
        "job_uss_p50": mib([u.uss for u in jobs]),
        "job_pss_p50": mib([u.pss for u in jobs]),
        "job_uss_max": round(procs.mib(max((u.uss for u in jobs), default=0)), 1),
        "total_uss": round(procs.mib(sum(u.uss for u in everything)), 1),
        "total_pss": round(procs.mib(sum(u.pss for u in everything)), 1),
    }
