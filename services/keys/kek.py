"""The key-encryption key (KEK): what wraps every data key at rest, held by the key service only.

``KeyEncryptionKey`` is the interface a KMS (AWS KMS, GCP KMS, Vault transit) can implement
later: wrap, unwrap, and the id of the key that wraps new data keys. ``LocalKeyring`` is the
implementation for a keyring the deployment provides: the variable ``MEDIAI_KEK`` (read only
by this process; ``mediai up`` never passes it to another part), or else the file
``MEDIAI_KEK_FILE`` (default ``<data dir>/kek``, created by ``mediai up`` with mode 0600; a
file readable by others is refused). Its text is one KEK per line, newest first::

    kek-20260115-3f9a1c 6bq1...base64 of 32 random bytes...=

The first KEK wraps new data keys; the others still unwrap the data keys not yet re-wrapped
(``mediai keys rotate`` adds a KEK and re-wraps; ``mediai keys retire`` drops the old ones once
nothing needs them). The file is read again when it changes, so a rotation needs no restart.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from shared.config import ConfigError, Settings

ENVIRONMENT_VARIABLE = "MEDIAI_KEK"
_NONCE = 12


class KeyEncryptionKey(Protocol):
    """Wraps and unwraps data keys; a KMS implements this with its own calls."""

    @property
    def current_id(self) -> str:
        """The KEK that wraps new data keys."""
        ...

    async def wrap(self, secret: bytes, aad: bytes) -> tuple[str, bytes]:
        """``(kek id, wrapped)`` of a data key, bound to ``aad`` (the key's row)."""
        ...

    async def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes:
        """The data key; KekError if ``kek_id`` is unknown or the bytes do not open."""
        ...


class KekError(Exception):
    """The keyring is missing, malformed or unusable; the message is one line."""


def new_kek_line() -> str:
    kek_id = f"kek-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(3)}"
    return f"{kek_id} {base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()}"


def parse_keyring(text: str, where: str) -> list[tuple[str, bytes]]:
    keks = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        kek_id, _, encoded = line.partition(" ")
        try:
            secret = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            secret = b""
        if not kek_id or len(secret) != 32:
            raise KekError(f"{where}, line {number}: not '<kek id> <base64 of 32 bytes>'")
        keks.append((kek_id, secret))
    if not keks:
        raise KekError(f"{where}: no key-encryption key in it")
    return keks


def write_keyring(path: Path, lines: list[str]) -> None:
    """Replace the keyring file atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    temporary.replace(path)


def ensure_keyring_file(path: Path) -> bool:
    """Create a keyring with one new KEK if there is none (the local stack); True if created."""
    if path.exists():
        return False
    write_keyring(path, [new_kek_line()])
    return True


def prepend_new_kek(path: Path) -> str:
    """Put a new KEK first in the keyring file (it wraps new data keys from now on); its id."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    new = new_kek_line()
    write_keyring(path, [new, *lines])
    return new.split(" ", 1)[0]


def drop_keks(path: Path, kek_ids: set[str]) -> None:
    lines = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and line.split(" ", 1)[0] not in kek_ids
    ]
    write_keyring(path, lines)


def keyring_path(settings: Settings) -> Path:
    return settings.kek_file or settings.data_dir / "kek"


class LocalKeyring:
    """KEKs from ``MEDIAI_KEK`` or the keyring file (see the module docstring)."""

    def __init__(self, text: str | None, path: Path) -> None:
        self.path = path
        self._text = text
        self._mtime = 0.0
        self._keks: list[tuple[str, bytes]] = []
        self.reload()

    @classmethod
    def load(cls, settings: Settings) -> LocalKeyring:
        return cls(os.environ.get(ENVIRONMENT_VARIABLE) or None, keyring_path(settings))

    @property
    def from_file(self) -> bool:
        return self._text is None

    @property
    def current_id(self) -> str:
        self._refresh()
        return self._keks[0][0]

    @property
    def ids(self) -> list[str]:
        return [kek_id for kek_id, _ in self._keks]

    def reload(self) -> None:
        if self._text is not None:
            self._keks = parse_keyring(self._text, ENVIRONMENT_VARIABLE)
            return
        try:
            info = self.path.stat()
            if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise KekError(f"{self.path}: readable by others; chmod 600 it")
            text = self.path.read_text()
        except FileNotFoundError:
            raise ConfigError(
                f"MEDIAI_KEK_FILE: no key-encryption key at {self.path} (set MEDIAI_KEK or "
                "MEDIAI_KEK_FILE; see docs/privacy.md)"
            ) from None
        self._keks = parse_keyring(text, str(self.path))
        self._mtime = info.st_mtime

    def _refresh(self) -> None:
        if self._text is None:
            try:
                changed = self.path.stat().st_mtime != self._mtime
            except FileNotFoundError:
                changed = False  # keep what we have; a missing file is reported at start
            if changed:
                self.reload()

    async def wrap(self, secret: bytes, aad: bytes) -> tuple[str, bytes]:
        self._refresh()
        kek_id, kek = self._keks[0]
        nonce = os.urandom(_NONCE)
        return kek_id, nonce + AESGCM(kek).encrypt(nonce, secret, aad)

    async def unwrap(self, kek_id: str, wrapped: bytes, aad: bytes) -> bytes:
        kek = dict(self._keks).get(kek_id)
        if kek is None:
            self.reload()  # rotated since we read it
            kek = dict(self._keks).get(kek_id)
        if kek is None:
            raise KekError(f"the key-encryption key {kek_id} is not in the keyring")
        try:
            return AESGCM(kek).decrypt(wrapped[:_NONCE], wrapped[_NONCE:], aad)
        except InvalidTag:
            raise KekError(f"a data key wrapped by {kek_id} does not open") from None
