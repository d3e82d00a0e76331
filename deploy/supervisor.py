"""Starts processes in order, waits for each to be ready, and stops them in reverse order.

Children run in their own session (so Ctrl-C reaches only the supervisor, which then stops
them in order) and get SIGKILL from the kernel if the supervisor itself dies, so no process is
ever left behind. One part can also be stopped, killed, frozen and started again on its ports
and data, as operators (and the fault suite, tests/faults) do to a running stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import shutil
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1
STOP_BUDGET_SECONDS = 10.0


class StackError(Exception):
    """A part could not start; the message is one line saying which and why."""


def executable(name: str) -> str:
    """A server installed with this Python environment (the registry packages' binaries)."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        raise StackError(f"{name} not found; run 'make install' (it comes from PyPI)")
    return found


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:  # noqa: S310 - our own loopback URL
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


async def http_ready(url: str) -> bool:
    """True when ``url`` answers 200 (a part's readiness probe); False on any failure."""
    return await asyncio.to_thread(_http_ok, url)


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Part:
    """One process of the stack."""

    name: str
    argv: list[str]
    url: str
    ready: Callable[[], Awaitable[bool]]
    ports: list[tuple[str, int]] = field(default_factory=list)  # (setting, port) to check first
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    prepare: Callable[[], Awaitable[None]] | None = None
    after_ready: Callable[[], Awaitable[None]] | None = None
    stop_signal: signal.Signals = signal.SIGTERM
    # Stopped once the rest of the parts started with it have stopped (they may need it then).
    stops_after_its_group: bool = False
    ready_timeout: float = 30.0
    process: asyncio.subprocess.Process | None = None


def as_user(user: str | None) -> dict[str, Any]:
    """Popen arguments that run a child as ``user`` with that user's group only (keeping root's
    group would make group permission bits, not the user's, decide what it may open)."""
    if user is None:
        return {}
    return {"user": user, "group": user, "extra_groups": []}


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            return error.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


class Supervisor:
    def __init__(self, host: str, log_dir: Path) -> None:
        self.host = host
        self.log_dir = log_dir
        self.parts: list[Part] = []
        # The parts started together, in the order they were started: a stop goes back
        # through them, each group at once (nothing in a group depends on another of it).
        self.groups: list[list[Part]] = []

    def log_path(self, part: Part) -> Path:
        return self.log_dir / f"{part.name}.log"

    async def start(self, part: Part) -> None:
        """Start one part and wait until it is ready; StackError with one line otherwise."""
        await self.start_together([part])

    async def _start(self, part: Part) -> None:
        for setting, port in part.ports:
            if port_in_use(self.host, port):
                raise StackError(
                    f"{part.name}: port {port} is already in use; free it or set {setting} "
                    "to another port"
                )
        if part.prepare is not None:
            await part.prepare()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_file = self.log_path(part).open("ab")
        try:
            process = await asyncio.create_subprocess_exec(
                *part.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, **part.env},
                **as_user(part.user),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            log_file.close()
        part.process = process
        deadline = time.monotonic() + part.ready_timeout
        while True:
            if process.returncode is not None:
                raise StackError(
                    f"{part.name} exited with code {process.returncode} while starting: "
                    f"{_tail(self.log_path(part))} (log: {self.log_path(part)})"
                )
            try:
                if await asyncio.wait_for(part.ready(), timeout=2.0):
                    break
            except Exception:  # noqa: BLE001, S110 - any probe failure only means "not ready yet"
                pass
            if time.monotonic() > deadline:
                raise StackError(
                    f"{part.name} was not ready after {part.ready_timeout:.0f}s "
                    f"(log: {self.log_path(part)})"
                )
            await asyncio.sleep(0.1)
        if part.after_ready is not None:
            await part.after_ready()

    async def start_together(self, parts: list[Part]) -> None:
        """Start parts concurrently; the first failure is raised once all have settled."""
        new = [p for p in parts if p not in self.parts]
        self.parts.extend(new)
        if new:
            self.groups.append(new)
        results = await asyncio.gather(*(self._start(p) for p in parts), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def report_exits(self, report: Callable[[str], None]) -> None:
        """Until cancelled, report each part that exits on its own (a crash after it was
        ready), naming its exit code and log. The rest of the stack keeps running."""

        async def watch(part: Part) -> None:
            assert part.process is not None
            code = await part.process.wait()
            report(f"{part.name} exited with code {code}; see {self.log_path(part)}")

        await asyncio.gather(*(watch(p) for p in self.parts if p.process is not None))

    async def stop(self, budget: float = STOP_BUDGET_SECONDS) -> None:
        """Stop every part, the groups started together in reverse order and the parts of a
        group at once (the services before NATS and PostgreSQL, which they flush to as they
        stop); whatever is still running at its share of the budget gets SIGKILL, so the
        whole stop takes at most ``budget`` seconds."""
        deadline = time.monotonic() + budget - 0.5
        for group in reversed(self.groups):
            first = [p for p in group if not p.stops_after_its_group]
            for parts in (first, [p for p in group if p.stops_after_its_group]):
                timeout = max(0.1, min(4.0, deadline - time.monotonic()))
                await asyncio.gather(*(_stop(part, timeout) for part in parts))
        self.parts.clear()
        self.groups.clear()

    # -- one part of a running stack ------------------------------------------------------

    def part(self, name: str) -> Part:
        """The started part called ``name`` (``nats``, ``nats-2``, ``postgres``, ``rooms``...)."""
        for part in self.parts:
            if part.name == name:
                return part
        known = ", ".join(p.name for p in self.parts)
        raise StackError(f"no part {name!r} in this stack; its parts: {known}")

    def pid(self, name: str) -> int | None:
        """The pid of the part's main process, or None once it has exited."""
        process = self.part(name).process
        return process.pid if process is not None and process.returncode is None else None

    async def stop_part(self, name: str, timeout: float = STOP_BUDGET_SECONDS) -> None:
        """Stop one part with its normal stop signal (SIGKILL after ``timeout``); it stays in
        the stack, to be started again with ``start_again``."""
        await _stop(self.part(name), timeout)

    async def kill(self, name: str) -> None:
        """SIGKILL every process of the part's process group, as the kernel's OOM killer or a
        crash would end it, and wait until its main process is gone."""
        part = self.part(name)
        if part.process is None or part.process.returncode is not None:
            return
        self.signal_all(name, signal.SIGKILL)
        await part.process.wait()

    async def start_again(self, name: str, env: dict[str, str] | None = None) -> None:
        """Start a stopped or killed part on the same ports and data, and wait until it is
        ready. ``env`` updates the part's environment from then on (e.g. a crash point; set a
        variable to "" to clear it: MediAI reads an empty variable as unset)."""
        part = self.part(name)
        if part.process is not None and part.process.returncode is None:
            raise StackError(f"{name} is still running (pid {part.process.pid})")
        part.env = {**part.env, **(env or {})}
        await self.start(part)

    def freeze(self, name: str) -> list[int]:
        """SIGSTOP every process of the part (its process group and any descendant in another
        group): for PostgreSQL the postmaster and all its backends, as a hung host would look.
        Returns the pids stopped."""
        return self.signal_all(name, signal.SIGSTOP)

    def thaw(self, name: str) -> list[int]:
        """SIGCONT every process of the part (the undoing of ``freeze``)."""
        return self.signal_all(name, signal.SIGCONT)

    def signal_all(self, name: str, sig: signal.Signals) -> list[int]:
        """Send ``sig`` to the part's whole process group and process tree; the pids reached."""
        part = self.part(name)
        if part.process is None or part.process.returncode is not None:
            raise StackError(f"{name} is not running")
        root = part.process.pid
        # The group first, in one call, so a process cannot fork a child between two signals.
        _signal_group(root, sig)
        reached = process_tree(root)
        for pid in reached:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        return reached


async def _stop(part: Part, timeout: float) -> None:
    process = part.process
    if process is None or process.returncode is not None:
        return
    _signal_group(process.pid, signal.SIGCONT)  # a frozen part could not act on its signal
    _signal_group(process.pid, part.stop_signal)
    try:
        await asyncio.wait_for(process.wait(), timeout=timeout)
    except TimeoutError:
        _signal_group(process.pid, signal.SIGKILL)
        await process.wait()
    # Anything the part left in its process group goes with it.
    _signal_group(process.pid, signal.SIGKILL)


def process_tree(root: int) -> list[int]:
    """``root`` and every live descendant of it, from /proc (parents before children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited meanwhile
        # The command name is in parentheses and may hold spaces: the fields follow the last ')'.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    tree, queue = [], [root]
    while queue:
        pid = queue.pop(0)
        tree.append(pid)
        queue.extend(children.get(pid, []))
    return tree


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
