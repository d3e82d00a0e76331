"""Personal health information: sealed before it is written anywhere, opened only by who needs it.

One object, ``Phi``, does it for events, rows and documents, with data keys from a
``KeySource`` (``shared.keys``: the key service's client in services, the dispatch's keys in
an agent job)::

    sealed = await bus.phi.seal(event)          # shared.bus does this on every publish
    opened = await bus.phi.open(event)          # a ConsumerSpec with opens=True gets this
    column = await phi.seal_text(text, tenant=t, patient_ref=ref, kind="clinical", path="summary_pt_br")
    text = await phi.open_text(column, tenant=t, path="summary_pt_br")

Which fields: the privacy marks of the schema (``shared.events.privacy``); a type without
personal or clinical fields passes through untouched, and so do empty values. Which key: the
event's ``patient_ref`` field and the field's kind (``personal`` or ``clinical``); an event
with no ``patient_ref`` (or an empty one) is about no patient and uses its tenant's key. The
lookup reads only ``patient_ref``, so an event type gains per-patient keys by gaining that field.

In place: a sealed text is a string token (``shared.crypto``), a sealed document is
``{"$sealed": token}``, so the schema's types do not change and plaintext written before
encryption still reads (it is returned as it is). Sealing twice changes nothing.

When a value cannot be opened, because its key was destroyed (the patient was erased, the
retention of the record ended) or it does not authenticate, it opens to ``ERASED``
(``"[apagado]"``) or, for a document, ``ERASED_DOCUMENT``; opening never raises for that, so a
consumer replaying the log after an erasure carries on. Only the key service being away raises
(``KeysUnavailableError``, an outage the consumers wait out). Billing never opens anything.
Table columns use the same tokens, with the name of the event field they hold as the path, so a
token can be copied from an event into a row without opening it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import msgspec

from shared.crypto import DataKey, UnreadableError, is_sealed, key_id_of
from shared.events import Envelope
from shared.events.privacy import (
    DOCUMENT,
    NESTED,
    NESTED_LIST,
    TEXT,
    TEXTS,
    Seal,
    sealing_plan,
)

log = logging.getLogger(__name__)

ERASED = "[apagado]"
ERASED_DOCUMENT: dict[str, Any] = {"$erased": ERASED}
SEALED_KEY = "$sealed"
PERSONAL, CLINICAL = "personal", "clinical"

S = TypeVar("S", bound=msgspec.Struct)


class KeysUnavailableError(Exception):
    """The key service could not be asked (down, or no answer in time): an outage, waited out
    like PostgreSQL's (``shared.failures`` reads ``dependency``)."""

    dependency = "keys"


class KeySource(Protocol):
    """Where data keys come from. ``patient_ref`` empty means the tenant's own key."""

    async def for_sealing(self, tenant: str, patient_ref: str, purpose: str) -> DataKey:
        """The live key to seal new data of this patient (and purpose) with."""
        ...

    async def for_opening(self, tenant: str, key_id: str) -> DataKey | None:
        """The key ``key_id`` of ``tenant``; None if it was destroyed or is not the tenant's."""
        ...


def is_erased(value: object) -> bool:
    """Whether an opened value could not be opened (its key is gone)."""
    return value in (ERASED, ERASED_DOCUMENT)


def patient_of(data: object) -> str:
    """The patient an event or record is about ("" for none): its ``patient_ref`` field."""
    ref = getattr(data, "patient_ref", "")
    return ref if isinstance(ref, str) else ""


Text = Callable[[str, Seal], Awaitable[str]]
Document = Callable[[dict[str, Any], Seal], Awaitable[dict[str, Any]]]


class Phi:
    """Seals and opens personal and clinical data with the keys of ``keys``."""

    def __init__(self, keys: KeySource) -> None:
        self.keys = keys

    # -- events --------------------------------------------------------------------------

    async def seal(self, event: Envelope) -> Envelope:
        """The event with its personal and clinical fields sealed (the same object when there
        is nothing to seal)."""
        data = await self.seal_data(event.data, tenant=event.tenant)
        return event if data is event.data else msgspec.structs.replace(event, data=data)

    async def open(self, event: Envelope) -> Envelope:
        """The event with its sealed fields opened (``ERASED`` where the key is gone)."""
        data = await self.open_data(event.data, tenant=event.tenant)
        return event if data is event.data else msgspec.structs.replace(event, data=data)

    async def seal_data(self, data: S, *, tenant: str) -> S:
        plan = sealing_plan(type(data))
        if not plan:
            return data
        patient = patient_of(data)

        async def text(value: str, step: Seal) -> str:
            return await self.seal_text(
                value, tenant=tenant, patient_ref=patient, kind=step.kind, path=step.path
            )

        async def document(value: dict[str, Any], step: Seal) -> dict[str, Any]:
            return await self.seal_document(
                value, tenant=tenant, patient_ref=patient, kind=step.kind, path=step.path
            )

        return await _apply(plan, data, text, document)

    async def open_data(self, data: S, *, tenant: str) -> S:
        plan = sealing_plan(type(data))
        if not plan:
            return data

        async def text(value: str, step: Seal) -> str:
            return await self.open_text(value, tenant=tenant, path=step.path)

        async def document(value: dict[str, Any], step: Seal) -> dict[str, Any]:
            return await self.open_document(value, tenant=tenant, path=step.path)

        return await _apply(plan, data, text, document)

    # -- single values (table columns) ---------------------------------------------------

    async def seal_text(
        self, value: str, *, tenant: str, patient_ref: str, kind: str, path: str
    ) -> str:
        if not value or is_sealed(value):
            return value
        key = await self.keys.for_sealing(tenant, patient_ref, kind)
        return key.seal(value.encode(), path)

    async def open_text(self, value: str, *, tenant: str, path: str) -> str:
        if not is_sealed(value):
            return value  # empty, or written before encryption
        plain = await self._open(value, tenant, path)
        return ERASED if plain is None else plain.decode()

    async def seal_document(
        self, value: dict[str, Any], *, tenant: str, patient_ref: str, kind: str, path: str
    ) -> dict[str, Any]:
        if not value or _sealed_document(value):
            return value
        key = await self.keys.for_sealing(tenant, patient_ref, kind)
        return {SEALED_KEY: key.seal(msgspec.json.encode(value), path)}

    async def open_document(
        self, value: dict[str, Any], *, tenant: str, path: str
    ) -> dict[str, Any]:
        if not _sealed_document(value):
            return value
        plain = await self._open(value[SEALED_KEY], tenant, path)
        if plain is None:
            return dict(ERASED_DOCUMENT)
        opened: dict[str, Any] = msgspec.json.decode(plain)
        return opened

    async def _open(self, token: str, tenant: str, path: str) -> bytes | None:
        key = await self.keys.for_opening(tenant, key_id_of(token))
        if key is None:
            return None
        try:
            return key.open(token, path)
        except UnreadableError as error:
            # Tampered, or copied from another field: unreadable, like an erased value.
            log.warning("a sealed %s could not be opened: %s", path, error)
            return None


def _sealed_document(value: dict[str, Any]) -> bool:
    return len(value) == 1 and is_sealed(value.get(SEALED_KEY))


async def _apply(plan: tuple[Seal, ...], data: S, text: Text, document: Document) -> S:
    """``data`` with ``text``/``document`` applied to each sealed place of ``plan``."""
    changes: dict[str, Any] = {}
    for step in plan:
        value = getattr(data, step.name)
        if not value:
            continue
        if step.shape == TEXT:
            changed: Any = await text(value, step)
        elif step.shape == TEXTS:
            changed = [await text(item, step) if item else item for item in value]
        elif step.shape == DOCUMENT:
            changed = await document(value, step)
        elif step.shape == NESTED:
            changed = await _apply(step.inner, value, text, document)
        elif step.shape == NESTED_LIST:
            changed = [await _apply(step.inner, item, text, document) for item in value]
        else:
            raise AssertionError(step.shape)
        if changed is not value and changed != value:
            changes[step.name] = changed
    return msgspec.structs.replace(data, **changes) if changes else data
