"""Starts processes in order, waits for each to be ready, and stops them in reverse order.

Children run in their own session (so Ctrl-C reaches only the supervisor, which then stops
them in order) and get SIGKILL from the kernel if the supervisor itself dies, so no process is
ever left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1
STOP_BUDGET_SECONDS = 10.0


class StackError(Exception):
    """A part could not start; the message is one line saying which and why."""


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

    def log_path(self, part: Part) -> Path:
        return self.log_dir / f"{part.name}.log"

    async def start(self, part: Part) -> None:
        """Start one part and wait until it is ready; StackError with one line otherwise."""
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
            part.process = await asyncio.create_subprocess_exec(
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
        self.parts.append(part)
        deadline = time.monotonic() + part.ready_timeout
        while True:
            if part.process.returncode is not None:
                raise StackError(
                    f"{part.name} exited with code {part.process.returncode} while starting: "
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
        results = await asyncio.gather(*(self.start(p) for p in parts), return_exceptions=True)
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
        """Stop every part in reverse order; whatever is still running at its share of the
        budget gets SIGKILL, so the whole stop takes at most ``budget`` seconds."""
        deadline = time.monotonic() + budget - 0.5
        for part in reversed(self.parts):
            process = part.process
            if process is None or process.returncode is not None:
                continue
            _signal_group(process.pid, part.stop_signal)
            remaining = max(0.1, min(4.0, deadline - time.monotonic()))
            try:
                await asyncio.wait_for(process.wait(), timeout=remaining)
            except TimeoutError:
                _signal_group(process.pid, signal.SIGKILL)
                await process.wait()
            # Anything the part left in its process group goes with it.
            _signal_group(process.pid, signal.SIGKILL)
        self.parts.clear()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
