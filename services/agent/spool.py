"""A session's events on disk until JetStream has them, so a job that exits or is killed while
NATS is away loses nothing it had emitted.

Layout: ``<data dir>/agent-spool/<worker id>/<dispatch id>-<random>.jsonl``, one journal per
session, written only by the job process holding its ``flock``. Each line is one CloudEvents
document, ``-{json}\\n``; its first byte becomes ``+`` once JetStream acknowledged it, and the
journal is emptied each time everything in it was acknowledged (so in normal operation it holds
at most the events in flight). A journal nobody holds (its process exited or was killed) is a
leftover, which a worker publishes (services/agent/leftovers.py).

Lines go to the kernel with one ``pwrite`` and no ``fsync``: the page cache outlives a killed
process, which is the failure this is for, and an ``fsync`` per event would stall the job's
event loop (its audio) for milliseconds on a busy disk. A machine crash can lose the last
seconds of unsynced lines, but it loses the session with them; a line torn by it is skipped.

Transcripts are personal data: files are 0600 in 0700 folders, and log lines name event types,
ids and files only.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from shared.events import CODEC, Envelope

log = logging.getLogger(__name__)

SPOOL_DIR = "agent-spool"
SUFFIX = ".jsonl"
REFUSED_FILE = "refused"  # how many events this worker's jobs could not spool (the cap)
PENDING, SENT = b"-", b"+"


def spool_root(data_dir: Path) -> Path:
    return data_dir / SPOOL_DIR


def try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def same_file(path: Path, fd: int) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (not deleted or replaced since)."""
    try:
        return path.stat().st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _journal_entries(root: Path) -> Iterator[os.DirEntry[str]]:
    # os.scandir, not Path.glob: this runs on every append, in the job's audio loop.
    try:
        with os.scandir(root) as entries:
            folders = sorted(e.path for e in entries if e.is_dir(follow_symlinks=False))
    except FileNotFoundError:
        return
    for folder in folders:
        try:
            with os.scandir(folder) as entries:
                found = [e for e in entries if e.name.endswith(SUFFIX)]
        except FileNotFoundError:
            continue
        yield from sorted(found, key=lambda e: e.name)


def journals(root: Path) -> Iterator[Path]:
    """Every journal under the spool, folder by folder."""
    return (Path(entry.path) for entry in _journal_entries(root))


def spooled_bytes(root: Path, *, besides: Path | None = None) -> int:
    total = 0
    for entry in _journal_entries(root):
        if besides is None or entry.path != str(besides):
            with contextlib.suppress(FileNotFoundError):
                total += entry.stat().st_size
    return total


def refused_total(worker_dir: Path) -> int:
    try:
        return int((worker_dir / REFUSED_FILE).read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _count_refused(worker_dir: Path) -> None:
    # Several job processes share the count: a read-modify-write under flock. Only at the cap.
    fd = os.open(worker_dir / REFUSED_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        count = int(os.pread(fd, 32, 0) or b"0") + 1
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(count).encode(), 0)
    finally:
        os.close(fd)


class Journal:
    """One session's spool file, written by the one process that holds it."""

    def __init__(self, path: Path, fd: int, root: Path, max_bytes: int) -> None:
        self.path, self.root, self.max_bytes = path, root, max_bytes
        self._fd: int | None = fd
        self._end = 0  # where the next line goes
        self.unsent = 0
        self._refused = 0

    @classmethod
    def create(cls, root: Path, worker_id: str, name: str, max_bytes: int) -> Journal:
        """A new, locked journal in the worker's folder; OSError if the disk refuses."""
        folder = root / worker_id
        for _ in range(5):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = folder / f"{name}-{secrets.token_hex(4)}{SUFFIX}"
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            except FileNotFoundError:
                continue  # a sweeper removed the (empty, unheld) folder meanwhile: again
            # Between open and lock a sweeper could take the empty file for a leftover and
            # delete it: keep the lock only if the path still names this file.
            fcntl.flock(fd, fcntl.LOCK_EX)
            if same_file(path, fd):
                return cls(path, fd, root, max_bytes)
            os.close(fd)
        raise OSError(f"could not create a spool journal in {folder}")

    def append(self, event: Envelope) -> int | None:
        """Write the event; its offset, or None when it stays in memory only (the spool is at
        its cap, or the disk failed): it is then lost if the process dies before NATS is back."""
        if self._fd is None:
            raise RuntimeError("the journal is closed")
        line = PENDING + CODEC.encode(event) + b"\n"
        try:
            if self._end + len(line) + spooled_bytes(self.root, besides=self.path) > self.max_bytes:
                self._refuse(event, f"the spool is at its cap of {self.max_bytes} bytes")
                return None
            written = os.pwrite(self._fd, line, self._end)
            if written != len(line):
                os.ftruncate(self._fd, self._end)
                raise OSError("short write")
        except OSError as error:
            self._refuse(event, f"the disk refused it ({error.strerror or error})")
            return None
        offset, self._end = self._end, self._end + len(line)
        self.unsent += 1
        return offset

    def _refuse(self, event: Envelope, why: str) -> None:
        with contextlib.suppress(OSError):
            _count_refused(self.path.parent)
        self._refused += 1
        if self._refused == 1:  # once per session; the count goes on in mediai_agent_spool_*
            log.error(
                "spool: %s %s kept in memory only (%s): it is lost if this job ends before "
                "NATS is back; journal %s",
                event.type,
                event.id,
                why,
                self.path.name,
            )

    def sent(self, offset: int | None) -> None:
        """JetStream acknowledged the event at ``offset`` (None: it was never written)."""
        if offset is None or self._fd is None:
            return
        self.unsent -= 1
        try:
            if self.unsent == 0:  # everything acknowledged: start the journal over
                os.ftruncate(self._fd, 0)
                self._end = 0
            else:
                os.pwrite(self._fd, SENT, offset)
        except OSError as error:  # it would only be published again, and dropped as a duplicate
            log.warning("spool: could not mark %s: %s", self.path.name, type(error).__name__)

    def close(self) -> None:
        """Release the journal: deleted when nothing is left to send, else a leftover."""
        if self._fd is None:
            return
        if self.unsent == 0:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        else:
            log.warning(
                "spool: %d events of %s left for the worker to publish",
                self.unsent,
                self.path.name,
            )
        os.close(self._fd)
        self._fd = None


def unsent_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(offset, document) of each complete line not yet acknowledged; a torn last line (a
    machine crash mid-write) is not complete and is skipped."""
    offset = 0
    while (end := data.find(b"\n", offset)) != -1:
        if data[offset : offset + 1] == PENDING:
            yield offset, data[offset + 1 : end]
        offset = end + 1


def read_unsent(path: Path) -> list[Envelope]:
    """The events a journal still holds for JetStream (read-only: what a flush would send)."""
    return [CODEC.decode(document) for _, document in unsent_lines(path.read_bytes())]
