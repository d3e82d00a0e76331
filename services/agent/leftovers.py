"""What ended or killed jobs left in the spool, published by a worker once NATS takes it.

Any worker on a data dir publishes any leftover journal there: whoever locks it first sends its
unsent lines in order, with their own event ids (JetStream's Msg-Id window, and consumers by
event id, drop what was already published), then deletes it. A worker keeps its own folder
locked while it lives, so only dead workers' folders are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from services.agent.spool import (
    REFUSED_FILE,
    SENT,
    SUFFIX,
    journals,
    refused_total,
    same_file,
    spooled_bytes,
    try_lock,
    unsent_lines,
)
from shared.bus import Bus, BusUnavailableError
from shared.events import CODEC, EventDecodeError

log = logging.getLogger(__name__)


class WorkerSpool:
    """A worker's folder in the spool, locked for the worker's life, and the publishing of
    every leftover on the data dir."""

    def __init__(self, root: Path, worker_id: str) -> None:
        self.root, self.folder = root, root / worker_id
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        if not try_lock(self._fd):
            os.close(self._fd)
            raise OSError(f"another live worker holds {self.folder}")
        self.flushed = 0  # leftover events this worker published

    def refused(self) -> int:
        return refused_total(self.folder)

    def bytes(self) -> int:
        return spooled_bytes(self.root)

    async def flush_forever(self, bus: Bus, period: float) -> None:
        """Publish leftovers at once, then every ``period`` while NATS is connected: within a
        period of NATS coming back, and of a job dying. A round is a folder listing when there
        is nothing to do."""
        while True:
            if bus.nc.is_connected:  # else nothing would be acknowledged
                try:
                    await self.flush(bus)
                except BusUnavailableError:
                    log.warning("spool: NATS went away during a flush; the rest waits for it")
                except OSError as error:
                    log.error("spool: flush failed: %s", type(error).__name__)
            await asyncio.sleep(period)

    async def flush(self, bus: Bus) -> int:
        """Publish what ended or killed jobs left (any worker's on this data dir), then remove
        dead workers' empty folders. BusUnavailableError if NATS goes away meanwhile."""
        published = 0
        for path in journals(self.root):
            published += await self._flush_journal(bus, path)
        with os.scandir(self.root) as entries:
            folders = [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)]
        for folder in folders:
            if folder != self.folder:
                _remove_if_dead(folder)
        return published

    async def _flush_journal(self, bus: Bus, path: Path) -> int:
        adopted = await asyncio.to_thread(_adopt, path)  # a journal can be megabytes
        if adopted is None:
            return 0  # its job holds it (or another worker took it first)
        fd, data = adopted
        published = 0
        try:
            for offset, document in unsent_lines(data):
                try:
                    event = CODEC.decode(document)
                except EventDecodeError:
                    log.error("spool: %s: an undecodable line at %d dropped", path.name, offset)
                    continue
                await bus.publish_envelope(event)  # BusUnavailableError: the rest waits
                os.pwrite(fd, SENT, offset)
                published += 1
                self.flushed += 1
            await asyncio.to_thread(path.unlink)
        finally:
            os.close(fd)
            if published:
                log.info("spool: published %d leftover events of %s", published, path.name)
        return published

    def close(self) -> None:
        os.close(self._fd)


def _adopt(path: Path) -> tuple[int, bytes] | None:
    """Lock a journal nobody holds: its open descriptor and contents, or None."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    if try_lock(fd) and same_file(path, fd):
        return fd, os.pread(fd, os.fstat(fd).st_size, 0)
    os.close(fd)
    return None


def _remove_if_dead(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return
    try:
        if not try_lock(fd) or any(folder.glob(f"*{SUFFIX}")):
            return  # its worker lives, or a leftover is still waiting
        with contextlib.suppress(FileNotFoundError):
            (folder / REFUSED_FILE).unlink()
        with contextlib.suppress(OSError):  # not empty: a journal was just created there
            folder.rmdir()
    finally:
        os.close(fd)
