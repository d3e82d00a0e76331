"""AES-256-GCM with data keys, and the sealed-text format every copy of personal data uses.

A sealed value is one string, so it fits the field or column the plain value had::

    enc:v1:<key id>:<base64url(12-byte nonce + ciphertext + 16-byte tag)>

The key id names the data key (``shared.keys``); the associated data is the field's path
(``summary_pt_br``, ``participants_found[].name``), so a ciphertext moved to another field
does not open. Nonces are random (96 bits): safe for far more values than one key will seal.
Opening with a destroyed or unknown key is the caller's business (``shared.phi``); here a value
that does not authenticate raises ``UnreadableError``.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "enc:v1:"
KEY_BYTES = 32
_NONCE_BYTES = 12


class UnreadableError(ValueError):
    """A sealed value that does not open with the key it names (tampered, or another field's)."""


@dataclass(frozen=True)
class DataKey:
    """A data key in clear, as a process holds it in memory (never stored so, never logged).

    ``purpose`` is ``personal``, ``clinical`` or ``tenant``; ``patient_ref`` is empty for a
    tenant key."""

    key_id: str
    tenant: str
    purpose: str
    patient_ref: str
    secret: bytes = field(repr=False)
    _aead: AESGCM = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise ValueError("a data key is 32 bytes (AES-256)")
        object.__setattr__(self, "_aead", AESGCM(self.secret))

    def seal(self, plaintext: bytes, path: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext, path.encode())
        return f"{PREFIX}{self.key_id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, token: str, path: str) -> bytes:
        key_id, blob = parse(token)
        if key_id != self.key_id:
            raise UnreadableError("sealed with another key")
        try:
            return self._aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], path.encode())
        except InvalidTag:
            raise UnreadableError("the sealed value does not authenticate") from None


def new_secret() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX)


def key_id_of(token: str) -> str:
    """The key id a sealed value names (no decryption)."""
    return token[len(PREFIX) :].partition(":")[0]


def parse(token: str) -> tuple[str, bytes]:
    if not is_sealed(token):
        raise UnreadableError("not a sealed value")
    key_id, colon, encoded = token[len(PREFIX) :].partition(":")
    try:
        blob = base64.urlsafe_b64decode(encoded)
    except (binascii.Error, ValueError):
        raise UnreadableError("a sealed value that is not base64") from None
    if not colon or not key_id or len(blob) < _NONCE_BYTES + 16:
        raise UnreadableError("a malformed sealed value")
    return key_id, blob
