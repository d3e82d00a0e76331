"""A recording at rest: its bytes encrypted in chunks with the patient's clinical-record key.

A sealed file is a header line naming the data key, then chunks, each ``<4-byte length><random
nonce + AES-256-GCM ciphertext + tag>`` (``DataKey.encrypt``). A chunk's associated data is the
file's id, its index and whether it is the last, so chunks cannot be reordered, moved to another
file or cut off unnoticed. The plain bytes never touch the disk; destroying the key (the clinic's
retention ended, or the patient erased) makes every copy unreadable at once.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from shared.crypto import DataKey, UnreadableError

MAGIC = b"MEDIAI-SEALED-FILE/1 "
CHUNK_BYTES = 64 * 1024
_LENGTH = struct.Struct(">I")


def _context(file_id: str, index: int, last: bool) -> bytes:
    return f"{file_id}:{index}:{int(last)}".encode()


class SealedWriter:
    """A write-only file object (what PyAV writes its container to) that seals as it goes."""

    def __init__(self, path: Path, key: DataKey, file_id: str) -> None:
        self.path, self.key, self.file_id = path, key, file_id
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = os.fdopen(descriptor, "wb")
        self._file.write(MAGIC + key.key_id.encode() + b"\n")
        self._pending = bytearray()
        self._index = 0
        self.plain_bytes = 0

    def write(self, data: bytes) -> int:
        self._pending += data
        self.plain_bytes += len(data)
        while len(self._pending) >= CHUNK_BYTES:
            self._seal(bytes(self._pending[:CHUNK_BYTES]), last=False)
            del self._pending[:CHUNK_BYTES]
        return len(data)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> int:
        """Seal the rest as the last chunk, sync, and return the file's size on disk."""
        self._seal(bytes(self._pending), last=True)
        self._pending.clear()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return self.path.stat().st_size

    def _seal(self, plain: bytes, *, last: bool) -> None:
        blob = self.key.encrypt(plain, _context(self.file_id, self._index, last))
        self._file.write(_LENGTH.pack(len(blob)) + blob)
        self._index += 1


def key_id_of(path: Path) -> str:
    """The id of the data key a sealed file needs (read from its header)."""
    with path.open("rb") as file:
        header = file.readline()
    if not header.startswith(MAGIC):
        raise UnreadableError("not a sealed recording")
    return header[len(MAGIC) :].strip().decode()


def read_sealed(path: Path, key: DataKey, file_id: str) -> bytes:
    """The plain bytes of a sealed file; ``UnreadableError`` if it was altered or cut short."""
    data = path.read_bytes()
    header_end = data.index(b"\n") + 1
    position, index, plain = header_end, 0, bytearray()
    while position < len(data):
        (length,) = _LENGTH.unpack_from(data, position)
        blob = data[position + _LENGTH.size : position + _LENGTH.size + length]
        position += _LENGTH.size + length
        last = position >= len(data)
        plain += key.decrypt(blob, _context(file_id, index, last))
        index += 1
    if index == 0:
        raise UnreadableError("a sealed recording with no chunk")
    return bytes(plain)
