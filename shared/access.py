"""The access log (LGPD Art. 37): every read of a patient's personal data through the API is an
event, and the log of them is a hash chain, so an edited or removed entry shows.

A route that answers with a patient's personal data takes ``reader: Reader`` (the dependency
``provide_reader`` gives it) and records the read before it answers::

    await reader.record(bus, tenant.id, patient_ref=ref, resource="anamnesis", resource_id=d)

That publishes ``PersonalDataRead`` (who: the API key's prefix; what for: the ``X-Purpose``
header, a short code such as ``treatment``); if it cannot be published the request fails (503)
and nothing is shown: no read goes unrecorded. One consumer (scheduling's ``access-log``) folds
the events into a chain per tenant: entry *n* holds the hash of entry *n-1*, and its own hash
covers its content and that link (``entry_hash``). ``verify_chain`` walks a chain and names each
entry that was edited, and each gap where entries were removed.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from litestar import Request

from shared.bus import Bus
from shared.events.patients import PersonalDataRead
from shared.http import ApiError
from shared.tenants import KEY_PREFIX

PURPOSE_HEADER = "X-Purpose"
# A short code, not free text: the log is kept for good and must hold nothing personal.
PURPOSE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}(?!\n)$")
PURPOSE_RULE = (
    "a short code saying why the data is read (e.g. treatment, patient-request, audit): "
    "1-64 lower-case letters, digits, '.', '_' or '-'"
)
# The previous hash of a chain's first entry.
GENESIS = "0" * 64
_API_KEY_PREFIX_LENGTH = 11  # what api_keys.key_prefix keeps (shared.tenants)


class InvalidPurposeError(ValueError):
    """The ``X-Purpose`` header is not a purpose code."""


@dataclass(frozen=True)
class Reader:
    """Who reads (``reader``: ``api_key:<prefix>``) and what for (``purpose``, "" if unsaid)."""

    reader: str
    purpose: str
    service: str

    async def record(
        self, bus: Bus, tenant: str, *, patient_ref: str, resource: str, resource_id: str = ""
    ) -> None:
        """Publish the read (before the answer leaves: a failure here fails the request)."""
        if not patient_ref:
            return  # data about no patient: nobody's access log
        await bus.publish(
            PersonalDataRead(
                patient_ref=patient_ref,
                resource=resource,
                resource_id=resource_id,
                reader=self.reader,
                purpose=self.purpose,
                service=self.service,
                read_at=datetime.now(UTC),
            ),
            tenant=tenant,
            key=patient_ref,
        )


def reader_of(authorization: str, purpose: str | None, service: str) -> Reader:
    """The reader of a request: its API key's prefix, its purpose code (InvalidPurposeError when
    the header is not one)."""
    _, _, key = authorization.partition(" ")
    key = key.strip()
    who = f"api_key:{key[:_API_KEY_PREFIX_LENGTH]}" if key.startswith(KEY_PREFIX) else "unknown"
    # A header sent empty is a purpose left unsaid by mistake: refused, like any other invalid one.
    if purpose is not None and not PURPOSE.fullmatch(purpose):
        raise InvalidPurposeError(f"{PURPOSE_HEADER} must be {PURPOSE_RULE}")
    return Reader(reader=who, purpose=purpose or "", service=service)


def provide_reader(service: str) -> Any:
    """The ``reader`` dependency of a service's routes (a 400 ``invalid_purpose`` for a bad
    ``X-Purpose`` header)."""

    async def reader(request: Request[Any, Any, Any]) -> Reader:
        try:
            return reader_of(
                request.headers.get("authorization", ""),
                request.headers.get(PURPOSE_HEADER.lower()),
                service,
            )
        except InvalidPurposeError as error:
            raise ApiError(
                str(error),
                code="invalid_purpose",
                details=[{"field": PURPOSE_HEADER, "problem": f"must be {PURPOSE_RULE}"}],
            ) from None

    return reader


# -- the chain ------------------------------------------------------------------------------


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of a tenant's access log, as stored and as hashed."""

    position: int
    event_id: str
    patient_ref: str
    resource: str
    resource_id: str
    reader: str
    purpose: str
    service: str
    read_at: datetime
    previous_hash: str
    hash: str = ""


def entry_hash(entry: Entry) -> str:
    """SHA-256 of the entry's content and its link to the previous entry (not its own hash)."""
    content = msgspec.structs.asdict(entry)
    content.pop("hash")
    content["read_at"] = entry.read_at.astimezone(UTC).isoformat()
    return hashlib.sha256(msgspec.json.encode(dict(sorted(content.items())))).hexdigest()


def chained(previous: Entry | None, event_id: str, read: PersonalDataRead) -> Entry:
    """The entry that follows ``previous`` (None: the first of the chain) for one read."""
    entry = Entry(
        position=1 if previous is None else previous.position + 1,
        event_id=event_id,
        patient_ref=read.patient_ref,
        resource=read.resource,
        resource_id=read.resource_id,
        reader=read.reader,
        purpose=read.purpose,
        service=read.service,
        read_at=read.read_at,
        previous_hash=GENESIS if previous is None else previous.hash,
    )
    return msgspec.structs.replace(entry, hash=entry_hash(entry))


class Problem(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Where a chain is broken: ``edited`` (the entry's content does not match its hash),
    ``removed`` (entries missing before this position), ``relinked`` (its link to the previous
    entry does not match, with nothing missing: the previous one was replaced)."""

    position: int
    problem: str


def verify_chain(entries: list[Entry]) -> list[Problem]:
    """Every break of one tenant's chain, ``entries`` in position order ([] when it is intact).

    An edited entry fails its own hash; a removed one leaves a gap in the positions and a link
    that points at nothing. Removing the newest entries leaves no gap: compare the chain's
    length with the reads on the event log (``mediai access-log verify`` does)."""
    problems: list[Problem] = []
    previous: Entry | None = None
    for entry in entries:
        expected_position = 1 if previous is None else previous.position + 1
        expected_link = GENESIS if previous is None else previous.hash
        if entry.position != expected_position:
            problems.append(Problem(position=entry.position, problem="removed"))
        elif entry.previous_hash != expected_link:
            problems.append(Problem(position=entry.position, problem="relinked"))
        if entry_hash(entry) != entry.hash:
            problems.append(Problem(position=entry.position, problem="edited"))
        previous = entry
    return problems
