"""What a group of processes costs, read from /proc: CPU seconds, resident memory (RSS, and the
unique and proportional sets, USS and PSS, from ``smaps_rollup``) and open file descriptors.
The benches name the processes (a service's pid and its descendants); this module only reads.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
KB = 1024


@dataclass(frozen=True)
class Usage:
    """One process at one instant (memory in bytes; 0 for a process that is gone)."""

    pid: int
    cpu_seconds: float
    rss: int
    uss: int
    pss: int
    fds: int


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def children_by_parent() -> dict[int, list[int]]:
    """Every live process's children, from one pass over /proc."""
    found: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                found.setdefault(int(fields[1]), []).append(int(entry.name))
    return found


def descendants(pid: int, tree: dict[int, list[int]] | None = None) -> list[int]:
    """The live descendants of ``pid`` (not itself), parents before children."""
    tree = children_by_parent() if tree is None else tree
    found: list[int] = []
    pending = list(tree.get(pid, []))
    while pending:
        child = pending.pop(0)
        found.append(child)
        pending += tree.get(child, [])
    return found


def cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def cpu_seconds(pid: int) -> float:
    """User + system seconds of a live process (its own, not its children's)."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICKS if fields else 0.0


def usage(pid: int) -> Usage:
    """CPU, memory and file descriptors of one process (zeros for one that is gone)."""
    memory = {"Rss": 0, "Pss": 0, "Private_Clean": 0, "Private_Dirty": 0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in memory:
                memory[name] = int(rest.split()[0]) * KB
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, ValueError, IndexError):
        return Usage(pid, 0.0, 0, 0, 0, 0)
    return Usage(
        pid,
        cpu_seconds(pid),
        rss=memory["Rss"],
        uss=memory["Private_Clean"] + memory["Private_Dirty"],
        pss=memory["Pss"],
        fds=fds,
    )


def mib(size: float) -> float:
    return size / (1024 * KB)


SAMPLE_SECONDS = 1.0


class CpuSampler:
    """CPU seconds of processes between ``start`` and ``stop``, sampled every second (a process
    that exits meanwhile keeps its last sample). Subclasses say which processes in ``sample``."""

    def __init__(self) -> None:
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.began = 0.0
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> object:
        raise NotImplementedError

    def record(self, pids: list[int]) -> None:
        for pid in pids:
            seconds = cpu_seconds(pid)
            if seconds:  # 0: gone meanwhile; its last sample stands
                self.first.setdefault(pid, seconds if self.began == 0.0 else 0.0)
                self.last[pid] = seconds

    async def _forever(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_SECONDS)
            self.sample()

    def start(self) -> None:
        self.sample()
        self.began = time.monotonic()
        self._task = asyncio.create_task(self._forever())

    def halt(self) -> float:
        """Stop sampling, take the last sample; returns the wall seconds since ``start``."""
        if self._task is not None:
            self._task.cancel()
        self.sample()
        return time.monotonic() - self.began

    def used(self, pid: int) -> float:
        return self.last.get(pid, 0.0) - self.first.get(pid, 0.0)
