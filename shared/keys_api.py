"""The request/reply contract of the key service (``services/keys``) over core NATS.

Types and framing only; who may have which key is decided by the key service. A caller sends a
``*Request`` as JSON to ``subjects.keys_request_subject(Request.OPERATION)`` and gets back a
``Reply``. Operations:

- ``for_sealing``: the live key of (tenant, patient, purpose), created on first use; services.
- ``for_opening``: the key a sealed value names, if it still exists and is the tenant's.
- ``for_dispatch``: the keys of a dispatch's patient (or its tenant's key when it has no
  patient), only while the dispatch is requested, dispatched or joined; agent jobs.
- ``destroy``: destroy the live key of (tenant, patient, purpose) for good (erasure)::

      reply = await call(nc, DestroyKeysRequest(tenant=t, patient_ref=ref, purpose="personal"))
      reply.destroyed  # the key ids destroyed now ([] if it was already gone: idempotent)

  The key service announces each with ``DataKeyDestroyed`` (every process's cache drops it).

Data keys never travel in clear, not even inside the bus: each request carries the requester's
X25519 public key (``reply_key``), and the service seals every key of the reply to it with
AES-GCM under a key agreed with a fresh ephemeral X25519 key (ECDH, then HKDF-SHA256). A process
listening on someone else's reply inbox learns nothing. The key-encryption key never leaves the
key service at all.
"""

from __future__ import annotations

import base64
import os
from typing import Annotated, Any, ClassVar, Literal

import msgspec
import nats.errors
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nats.aio.client import Client as NatsClient

from shared.crypto import DataKey
from shared.naming import IDENTITY, TENANT_ID
from shared.phi import KeysUnavailableError
from shared.subjects import keys_request_subject
from shared.telemetry import inject

Purpose = Literal["personal", "clinical"]
TenantId = Annotated[str, msgspec.Meta(pattern=f"{TENANT_ID.pattern}|^system$")]
PatientRef = Annotated[str, msgspec.Meta(pattern=f"{IDENTITY.pattern}|^$")]
Id = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
PublicKey = Annotated[str, msgspec.Meta(min_length=40, max_length=48)]

ErrorCode = Literal[
    "unknown_key",  # destroyed, never existed, or another tenant's: the data is unreadable
    "dispatch_not_live",  # not a live dispatch of this tenant (ended, unknown, another's)
    "invalid_request",
    "unavailable",
]
_INFO = b"mediai keys reply v1"


class Request(msgspec.Struct, frozen=True, kw_only=True):
    OPERATION: ClassVar[str]
    tenant: TenantId


class KeyRequest(Request, frozen=True, kw_only=True):
    """A request answered with keys."""

    # The requester's X25519 public key (raw, base64): the reply's keys are sealed to it.
    reply_key: PublicKey


class SealingKeyRequest(KeyRequest, frozen=True, kw_only=True):
    OPERATION: ClassVar[str] = "for_sealing"
    patient_ref: PatientRef = ""
    purpose: Purpose


class OpeningKeyRequest(KeyRequest, frozen=True, kw_only=True):
    OPERATION: ClassVar[str] = "for_opening"
    key_id: Id


class DispatchKeysRequest(KeyRequest, frozen=True, kw_only=True):
    OPERATION: ClassVar[str] = "for_dispatch"
    dispatch_id: Id


class DestroyKeysRequest(Request, frozen=True, kw_only=True):
    """Destroy the live key of (tenant, patient, purpose); ``purpose`` ``tenant`` (with no
    patient) destroys the tenant's own key. Destroying what is already gone changes nothing."""

    OPERATION: ClassVar[str] = "destroy"
    patient_ref: PatientRef = ""
    purpose: Literal["personal", "clinical", "tenant"]
    reason: Literal["erasure", "retention", "operator"] = "erasure"


OPERATIONS: dict[str, type[Request]] = {
    r.OPERATION: r
    for r in (SealingKeyRequest, OpeningKeyRequest, DispatchKeysRequest, DestroyKeysRequest)
}


class WrappedKey(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str
    purpose: str
    patient_ref: str = ""
    # nonce + AES-GCM ciphertext of the 32-byte key, base64.
    sealed: str


class KeysReply(msgspec.Struct, frozen=True, kw_only=True):
    keys: list[WrappedKey] = msgspec.field(default_factory=list)
    # The service's one-time X25519 public key for this reply (base64).
    ephemeral: str = ""
    # For ``destroy``: the key ids destroyed now.
    destroyed: list[str] = msgspec.field(default_factory=list)


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str


class Reply(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    result: KeysReply | None = None
    error: ErrorInfo | None = None


class KeyRequestError(Exception):
    """The key service refused (``code`` from ``ErrorCode``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


_REPLY = msgspec.json.Decoder(Reply)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _reply_cipher(shared: bytes, ephemeral: bytes, requester: bytes) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO + ephemeral + requester)
    return AESGCM(hkdf.derive(shared))


class ReplyKeyPair:
    """The X25519 key pair a process asks for keys with (one per process, in memory only)."""

    def __init__(self) -> None:
        self._private = X25519PrivateKey.generate()
        self._public = self._private.public_key().public_bytes_raw()
        self.public = _b64(self._public)

    def unwrap(self, reply: KeysReply, tenant: str) -> list[DataKey]:
        ephemeral = base64.b64decode(reply.ephemeral)
        shared = self._private.exchange(X25519PublicKey.from_public_bytes(ephemeral))
        cipher = _reply_cipher(shared, ephemeral, self._public)
        keys = []
        for wrapped in reply.keys:
            blob = base64.b64decode(wrapped.sealed)
            try:
                secret = cipher.decrypt(blob[:12], blob[12:], wrapped.key_id.encode())
            except InvalidTag:
                raise KeyRequestError("unavailable", "a key in the reply did not open") from None
            keys.append(
                DataKey(
                    key_id=wrapped.key_id,
                    tenant=tenant,
                    purpose=wrapped.purpose,
                    patient_ref=wrapped.patient_ref,
                    secret=secret,
                )
            )
        return keys


def wrap_keys(reply_key: str, keys: list[DataKey]) -> KeysReply:
    """The key service's half: seal ``keys`` to the requester's public key."""
    requester = base64.b64decode(reply_key)
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes_raw()
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(requester))
    cipher = _reply_cipher(shared, ephemeral_public, requester)
    wrapped = []
    for key in keys:
        nonce = os.urandom(12)
        sealed = cipher.encrypt(nonce, key.secret, key.key_id.encode())
        wrapped.append(
            WrappedKey(
                key_id=key.key_id,
                purpose=key.purpose,
                patient_ref=key.patient_ref,
                sealed=_b64(nonce + sealed),
            )
        )
    return KeysReply(keys=wrapped, ephemeral=_b64(ephemeral_public))


def encode_result(result: KeysReply) -> bytes:
    return msgspec.json.encode(Reply(result=result))


def encode_error(code: ErrorCode, message: str) -> bytes:
    return msgspec.json.encode(Reply(error=ErrorInfo(code=code, message=message)))


async def call(nc: NatsClient, request: Request, *, timeout: float = 3.0) -> KeysReply:
    """Send ``request``; the reply, or KeyRequestError (refused) / KeysUnavailableError (no
    key service, or no answer in time)."""
    headers: dict[str, str] = {}
    inject(headers)
    try:
        message = await nc.request(
            keys_request_subject(request.OPERATION),
            msgspec.json.encode(request),
            timeout=timeout,
            headers=headers,
        )
    except nats.errors.NoRespondersError:
        raise KeysUnavailableError("the key service is not running") from None
    except (
        TimeoutError,
        nats.errors.ConnectionClosedError,
        nats.errors.ConnectionReconnectingError,
    ):
        raise KeysUnavailableError("the key service did not answer in time") from None
    try:
        reply = _REPLY.decode(message.data)
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise KeysUnavailableError(f"unreadable reply from the key service: {error}") from None
    if reply.error is not None:
        if reply.error.code == "unavailable":
            raise KeysUnavailableError(reply.error.message)
        raise KeyRequestError(reply.error.code, reply.error.message)
    if reply.result is None:
        raise KeysUnavailableError("the key service's reply had neither result nor error")
    return reply.result


def decode_request(operation: str, payload: bytes) -> Any:
    return msgspec.json.decode(payload, type=OPERATIONS[operation])
