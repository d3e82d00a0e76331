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
from collections.abc import Callable, Iterator, Mapping
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

    def held(self, tenant: str, patient_ref: str, purpose: str) -> DataKey | None:
        """The key ``for_sealing`` would give, if it is in memory now (no waiting)."""
        ...

    def evict(self, tenant: str, key_id: str) -> None:
        """Forget a destroyed key at once, and remember it is gone."""
        ...


def is_erased(value: object) -> bool:
    """Whether an opened value could not be opened (its key is gone)."""
    return value in (ERASED, ERASED_DOCUMENT)


def patient_of(data: object) -> str:
    """The patient an event or record is about ("" for none): its ``patient_ref`` field."""
    ref = getattr(data, "patient_ref", "")
    return ref if isinstance(ref, str) else ""


class Phi:
    """Seals and opens personal and clinical data with the keys of ``keys``.

    Keys are looked up first (the only waiting), then every field is sealed or opened at once."""

    def __init__(self, keys: KeySource) -> None:
        self.keys = keys

    # -- events --------------------------------------------------------------------------

    async def seal(self, event: Envelope) -> Envelope:
        """The event with its personal and clinical fields sealed (the same object when there
        is nothing to seal)."""
        data = await self.seal_data(event.data, tenant=event.tenant)
        return event if data is event.data else msgspec.structs.replace(event, data=data)

    def seal_now(self, event: Envelope) -> Envelope:
        """``seal`` without waiting, for a caller that must not (the agent's voice pipeline),
        with the keys ``keys`` holds in memory; an event whose keys are not held comes back as
        it is, and is sealed when it is published."""
        plan = sealing_plan(type(event.data))
        kinds = _kinds_to_seal(plan, event.data)
        if not kinds:
            return event
        patient = patient_of(event.data)
        keys = {kind: self.keys.held(event.tenant, patient, kind) for kind in kinds}
        held = {kind: key for kind, key in keys.items() if key is not None}
        if len(held) < len(kinds):
            return event
        return msgspec.structs.replace(event, data=_apply(plan, event.data, _sealer(held)))

    async def open(self, event: Envelope) -> Envelope:
        """The event with its sealed fields opened (``ERASED`` where the key is gone)."""
        data = await self.open_data(event.data, tenant=event.tenant)
        return event if data is event.data else msgspec.structs.replace(event, data=data)

    async def seal_data(self, data: S, *, tenant: str) -> S:
        plan = sealing_plan(type(data))
        kinds = _kinds_to_seal(plan, data)
        if not kinds:
            return data
        patient = patient_of(data)
        keys = {kind: await self.keys.for_sealing(tenant, patient, kind) for kind in kinds}
        return _apply(plan, data, _sealer(keys))

    async def open_data(self, data: S, *, tenant: str) -> S:
        plan = sealing_plan(type(data))
        ids = {key_id_of(token) for value, _ in _places(plan, data) for token in _tokens(value)}
        if not ids:
            return data
        keys = {key_id: await self.keys.for_opening(tenant, key_id) for key_id in ids}
        return _apply(plan, data, _opener(keys))

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
        key = await self.keys.for_opening(tenant, key_id_of(value))
        plain = _open_token(key, value, path)
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
        key = await self.keys.for_opening(tenant, key_id_of(value[SEALED_KEY]))
        return _open_document(key, value, path)


def _sealed_document(value: dict[str, Any]) -> bool:
    return len(value) == 1 and is_sealed(value.get(SEALED_KEY))


def _tokens(value: object) -> list[str]:
    if isinstance(value, str):
        return [value] if is_sealed(value) else []
    if isinstance(value, dict) and _sealed_document(value):
        return [value[SEALED_KEY]]
    return []


def _places(plan: tuple[Seal, ...], data: object) -> Iterator[tuple[Any, Seal]]:
    """Every non-empty value at a sealed place of ``data`` (list items one by one)."""
    for step in plan:
        value = getattr(data, step.name)
        if not value:
            continue
        if step.shape in (TEXT, DOCUMENT):
            yield value, step
        elif step.shape == TEXTS:
            yield from ((item, step) for item in value if item)
        elif step.shape == NESTED:
            yield from _places(step.inner, value)
        elif step.shape == NESTED_LIST:
            for item in value:
                yield from _places(step.inner, item)


def _kinds_to_seal(plan: tuple[Seal, ...], data: object) -> set[str]:
    return {step.kind for value, step in _places(plan, data) if not _tokens(value)}


def _open_token(key: DataKey | None, token: str, path: str) -> bytes | None:
    if key is None:
        return None
    try:
        return key.open(token, path)
    except UnreadableError as error:
        # Tampered, or copied from another field: unreadable, like an erased value.
        log.warning("a sealed %s could not be opened: %s", path, error)
        return None


def _open_document(key: DataKey | None, value: dict[str, Any], path: str) -> dict[str, Any]:
    plain = _open_token(key, value[SEALED_KEY], path)
    if plain is None:
        return dict(ERASED_DOCUMENT)
    opened: dict[str, Any] = msgspec.json.decode(plain)
    return opened


Change = Callable[[Any, Seal], Any]


def _sealer(keys: Mapping[str, DataKey]) -> Change:
    def seal(value: Any, step: Seal) -> Any:
        if not value or _tokens(value):
            return value
        key = keys[step.kind]
        if isinstance(value, str):
            return key.seal(value.encode(), step.path)
        return {SEALED_KEY: key.seal(msgspec.json.encode(value), step.path)}

    return seal


def _opener(keys: Mapping[str, DataKey | None]) -> Change:
    def open_(value: Any, step: Seal) -> Any:
        tokens = _tokens(value)
        if not tokens:
            return value  # empty, or written before encryption
        key = keys.get(key_id_of(tokens[0]))
        if isinstance(value, str):
            plain = _open_token(key, value, step.path)
            return ERASED if plain is None else plain.decode()
        return _open_document(key, value, step.path)

    return open_


def _apply(plan: tuple[Seal, ...], data: S, change: Change) -> S:
    """``data`` with ``change`` applied to each value at a sealed place of ``plan``."""
    changes: dict[str, Any] = {}
    for step in plan:
        value = getattr(data, step.name)
        if not value:
            continue
        if step.shape in (TEXT, DOCUMENT):
            changed: Any = change(value, step)
        elif step.shape == TEXTS:
            changed = [change(item, step) if item else item for item in value]
        elif step.shape == NESTED:
            changed = _apply(step.inner, value, change)
        elif step.shape == NESTED_LIST:
            changed = [_apply(step.inner, item, change) for item in value]
        else:
            raise AssertionError(step.shape)
        if changed is not value and changed != value:
            changes[step.name] = changed
    return msgspec.structs.replace(data, **changes) if changes else data
