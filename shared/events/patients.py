"""Events of the patients' rights (LGPD): erasure, and the record of who read personal data.

They carry no personal data: a patient is named by the clinic's pseudonymous ``patient_ref``,
a key by its id, a reader by its API key's prefix. They live on the business stream, with no age
limit: they are the proof that an erasure happened and of every read (LGPD Art. 37), and must
outlive the data they are about.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar

import msgspec

from shared.events.base import Event
from shared.events.privacy import PLAIN, Plain, Pseudonym


class ErasureRequested(Event, frozen=True, kw_only=True):
    """A clinic asked to erase a patient (LGPD Art. 18 VI) and the patient's personal-data key
    is destroyed: everything sealed with it, anywhere, is unreadable from ``keys_destroyed_at``.

    Every service holding rows about the patient folds it: it deletes or empties them (the
    columns sealed with one of ``destroyed_keys``, the patient's rows by ``patient_ref``) and
    answers ``PatientDataErased``. The clinical record (the anamnesis) is not erased: the law
    makes the clinic keep it, under its own key (see docs/privacy.md). Keyed by ``patient_ref``.
    """

    TYPE: ClassVar[str] = "mediai.patient.erasure_requested.v1"
    PRODUCER: ClassVar[str] = "scheduling"
    erasure_id: Plain
    patient_ref: Pseudonym
    requested_at: datetime
    # The ids of the patient's personal-data keys destroyed for this erasure.
    destroyed_keys: list[Plain] = msgspec.field(default_factory=list)
    keys_destroyed_at: datetime


class PatientDataErased(Event, frozen=True, kw_only=True):
    """A service erased what it held about a patient, for an erasure (``erasure_id``).

    ``holder`` is the service; ``erased`` counts what it deleted or emptied, by
    ``table.column`` (or ``table`` for whole rows): the erasure certificate lists it.
    Keyed by ``patient_ref``.
    """

    TYPE: ClassVar[str] = "mediai.patient.data_erased.v1"
    PRODUCER: ClassVar[str] = "scheduling, rooms"
    erasure_id: Plain
    patient_ref: Pseudonym
    holder: Plain
    erased: Annotated[dict[str, int], PLAIN] = msgspec.field(default_factory=dict)
    erased_at: datetime


class PersonalDataRead(Event, frozen=True, kw_only=True):
    """Someone read a patient's personal data through the API (LGPD Art. 37): the access log.

    ``resource`` is what was read (``anamnesis``, ``appointment``, ``patient_data``,
    ``erasure_certificate``) and ``resource_id`` which one; ``reader`` who read it (``api_key:``
    and the key's prefix); ``purpose`` what for, as the client said in the ``X-Purpose`` header
    ("" when it said nothing); ``service`` the service that answered. The access log
    (``GET /v1/access-log``) chains these, each entry holding the hash of the previous one.
    Published before the answer leaves the service: no read goes unrecorded. Keyed by
    ``patient_ref``.
    """

    TYPE: ClassVar[str] = "mediai.personal_data.read.v1"
    PRODUCER: ClassVar[str] = "scheduling (any service that serves personal data)"
    patient_ref: Pseudonym
    resource: Plain
    resource_id: Plain = ""
    reader: Plain
    purpose: Plain = ""
    service: Plain
    read_at: datetime


EVENTS: tuple[type[Event], ...] = (ErasureRequested, PatientDataErased, PersonalDataRead)
