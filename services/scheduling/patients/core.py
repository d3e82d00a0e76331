"""The erasure's decisions and its certificate, free of I/O.

An erasure of a patient goes: requested (recorded) -> keys destroyed (the personal-data key is
gone: every sealed copy is unreadable) -> completed (every service holding rows about the
patient said what it erased). A request for a patient whose erasure is under way carries that
one on; once completed, the same certificate answers again, unless data about the patient
arrived since (then it is a new erasure).
"""

from __future__ import annotations

from datetime import datetime

import msgspec

# The services that hold rows about a patient and fold ``ErasureRequested`` (each answers
# ``PatientDataErased``); a new holder adds itself here and to docs/privacy.md.
HOLDERS = ("scheduling", "rooms")

# What a holder's ``table.column`` (or ``table``) holds, for the certificate.
WHAT = {
    "appointments.patient_name": "the patient's name on appointments",
    "appointments.patient_contact": "the patient's contact on appointments",
    "appointments.reason": "the reason for the visit on appointments",
    "appointments.cancel_reason": "the reason an appointment was cancelled",
    "idempotency_keys": "answers kept for retried requests (they repeat names and contacts)",
    "room_participants.name": "participant names in the rooms read model",
    "room_participants.metadata": "participant metadata in the rooms read model",
    "room_instances.metadata": "room metadata in the rooms read model",
    "room_tracks.name": "track names in the rooms read model",
    "room_ingress.name": "ingress names in the rooms read model",
}

CLINICAL_BASIS = (
    "LGPD Art. 16 I and Art. 11 II a (a legal obligation of the controller); Lei 13.787/2018 "
    "Art. 6 and CFM Resolution 1.821/2007 Arts. 7-8 (medical records are kept at least 20 years "
    "from the last entry)"
)
RECORDS_BASIS = (
    "LGPD Art. 16 I (legal and regulatory obligations: the clinic's fiscal records, CTN Arts. "
    "173 and 195); Art. 8 §2 (the controller proves the consent it obtained); Art. 7 VI and "
    "Art. 11 II d (the regular exercise of rights in proceedings)"
)
LOG_BASIS = (
    "LGPD Art. 37 (the record of processing operations) and Art. 16 I: the proof that this "
    "request was answered"
)


class Erasure(msgspec.Struct, frozen=True, kw_only=True):
    """One erasure as recorded: ``keys_destroyed_at`` is None while it is in progress."""

    erasure_id: str
    tenant: str
    patient_ref: str
    requested_at: datetime
    requested_by: str = ""
    purpose: str = ""
    destroyed_keys: tuple[str, ...] = ()
    keys_destroyed_at: datetime | None = None

    @property
    def keys_destroyed(self) -> bool:
        return self.keys_destroyed_at is not None


class HolderReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one service erased (``PatientDataErased``)."""

    holder: str
    erased: dict[str, int]
    erased_at: datetime


def needs_new_erasure(latest: Erasure | None, data_since: bool) -> bool:
    """Whether a request starts a new erasure: none yet, or the latest one destroyed its keys
    and data about the patient arrived after (new keys now seal it). An erasure in progress is
    carried on, a finished one answered again."""
    if latest is None:
        return True
    return latest.keys_destroyed and data_since


# -- the certificate ------------------------------------------------------------------------


class Erased(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    what: str
    where: str
    how: str
    at: datetime | None = None
    rows: int | None = None


class Kept(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    what: str
    where: str
    protection: str
    until: str
    legal_basis: str


class Certificate(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What a clinic keeps as the answer to a patient's erasure request (LGPD Art. 18 VI)."""

    erasure_id: str
    patient_ref: str
    status: str  # "erasing" (keys or rows still going) | "completed"
    requested_at: datetime
    requested_by: str
    purpose: str
    keys_destroyed: list[str]
    keys_destroyed_at: datetime | None
    completed_at: datetime | None
    erased: list[Erased]
    kept: list[Kept]
    # The services that have not said yet what they erased.
    pending: list[str]


def certificate(
    erasure: Erasure, reports: list[HolderReport], *, clinical_retention_days: int
) -> Certificate:
    """The certificate of an erasure as far as it went (pure: the same inputs, the same one)."""
    confirmed = {r.holder: r for r in reports}
    pending = [h for h in HOLDERS if h not in confirmed]
    done = erasure.keys_destroyed and not pending
    erased: list[Erased] = []
    if erasure.keys_destroyed:
        keys = ", ".join(erasure.destroyed_keys) or "none was live (already destroyed)"
        erased.append(
            Erased(
                what="every personal field sealed with the patient's personal-data key: names, "
                "contacts, what was said (transcripts), dispatch instructions and agent commands, "
                "copilot hints, red-flag accounts, participant and room metadata",
                where="event streams, dead letters, outbox rows, the agent spool, database "
                "tables and their backups, LiveKit job and room metadata",
                how=f"crypto-shredding: key {keys} destroyed; every copy is unreadable",
                at=erasure.keys_destroyed_at,
            )
        )
    for holder in HOLDERS:
        report = confirmed.get(holder)
        if report is None:
            continue
        for place, rows in sorted(report.erased.items()):
            erased.append(
                Erased(
                    what=WHAT.get(place, place),
                    where=f"{holder}: {place}",
                    how="deleted" if "." not in place else "emptied",
                    at=report.erased_at,
                    rows=rows,
                )
            )
    return Certificate(
        erasure_id=erasure.erasure_id,
        patient_ref=erasure.patient_ref,
        status="completed" if done else "erasing",
        requested_at=erasure.requested_at,
        requested_by=erasure.requested_by,
        purpose=erasure.purpose,
        keys_destroyed=list(erasure.destroyed_keys),
        keys_destroyed_at=erasure.keys_destroyed_at,
        completed_at=max(r.erased_at for r in confirmed.values()) if done and confirmed else None,
        erased=erased,
        kept=kept(clinical_retention_days),
        pending=pending,
    )


def kept(clinical_retention_days: int) -> list[Kept]:
    """What an erasure keeps, and why."""
    return [
        Kept(
            what="the clinical record: the anamnesis (FHIR QuestionnaireResponse) and its summary",
            where="scheduling (anamnesis_records); the PHI stream until MEDIAI_PHI_RETENTION",
            protection="sealed with the patient's clinical-record key (not the erased one)",
            until=f"its key is destroyed {clinical_retention_days} days after it last sealed "
            "a record (MEDIAI_CLINICAL_RETENTION)",
            legal_basis=CLINICAL_BASIS,
        ),
        Kept(
            what="pseudonymous facts: the patient reference, appointment times and doctors, "
            "consultations (room, agent role, times), consent decisions (who, when, which "
            "wording), usage and invoices",
            where="event streams and read models",
            protection="no name, contact or content: only the clinic's pseudonymous reference",
            until="as long as the clinic's records and invoices must be kept",
            legal_basis=RECORDS_BASIS,
        ),
        Kept(
            what="this certificate and the access log of the patient's data",
            where="scheduling (patient_erasures, access_log) and the event log",
            protection="pseudonyms and API key prefixes only",
            until="for good",
            legal_basis=LOG_BASIS,
        ),
    ]
