"""CPU seconds used by this process, its children, and the servers it started: on a shared
machine, wall-clock rates depend on everyone else's load; CPU per event does much less."""

from __future__ import annotations

import os
import resource
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    """User + system seconds of a live process and its reaped children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return sum(int(f) for f in fields[11:15]) / _TICK


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def tree_cpu_seconds(pid: int) -> float:
    """A process's CPU seconds with its live descendants' (a Postgres server and its backends)."""
    total, pending = 0.0, [pid]
    while pending:
        current = pending.pop()
        total += _proc_cpu(current)
        pending += _children(current)
    return total


def cpu_seconds() -> float:
    """This process (with reaped children) plus every live descendant and their children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime
    pending = _children(os.getpid())
    while pending:
        pid = pending.pop()
        total += _proc_cpu(pid)
        pending += _children(pid)
    return total
