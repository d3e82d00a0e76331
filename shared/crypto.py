"""AES-256-GCM with data keys, and the sealed-text format every copy of personal data uses.

A sealed value is one string, so it fits the field or column the plain value had::

    enc:v1:<key id>:<base64url(12-byte nonce + ciphertext + 16-byte tag)>

The key id names the data key (``shared.keys``); the associated data is the field's path
(``summary_pt_br``, ``participants_found[].name``), so a ciphertext moved to another field
does not open.

Sealing is deterministic: the nonce is synthetic, HMAC-SHA256 of the path and the plaintext under
a nonce key derived from the data key (the SIV construction), so the same value sealed twice with
the same key and path is the same token. Projections compare values (a room's metadata from the
API's action and from LiveKit's webhook), and a read model rebuilt from the log must equal the
live one, whichever copy it folded last; random nonces would make equal values differ. What
this reveals is only that two sealed values are equal, under one patient's (or tenant's) key.
Distinct values get distinct, unpredictable nonces, as random ones would be.
Opening with a destroyed or unknown key is the caller's business (``shared.phi``); here a value
that does not authenticate raises ``UnreadableError``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "enc:v1:"
KEY_BYTES = 32
_NONCE_BYTES = 12
_NONCE_INFO = b"mediai synthetic nonce v1"


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
    _nonce_key: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.secret) != KEY_BYTES:
            raise ValueError("a data key is 32 bytes (AES-256)")
        object.__setattr__(self, "_aead", AESGCM(self.secret))
        derive = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_NONCE_INFO)
        object.__setattr__(self, "_nonce_key", derive.derive(self.secret))

    def seal(self, plaintext: bytes, path: str) -> str:
        aad = path.encode()
        synthetic = hmac.new(self._nonce_key, aad + b"\0" + plaintext, hashlib.sha256).digest()
        nonce = synthetic[:_NONCE_BYTES]
        sealed = self._aead.encrypt(nonce, plaintext, aad)
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
