"""Events of the medical roles: consent, anamnesis records, copilot hints, scheduling.

Where patient data goes: clinical content (the anamnesis record, its summary, transcript
references) lives only on the PHI stream, whose short retention bounds how long health data sits
in the log and which billing never reads. The booking events live on the business stream: they
are business facts (a slot was taken, moved, freed) that other services may count for years, so
they carry an opaque ``patient_ref`` chosen by the clinic (its own patient id, or the patient's
LiveKit identity) and never the patient's name, contact or reason for the visit, which stay in
the scheduling database where the clinic can correct or erase them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

import msgspec

from shared.events.base import PHI_STREAM, Event

# ---------------------------------------------------------------------------------------------
# Anamnesis (PHI stream)


class TranscriptRef(msgspec.Struct, frozen=True, kw_only=True):
    """Where one answer of a QuestionnaireResponse came from, so a clinician can check it."""

    # The ``linkId`` of the answered item in the QuestionnaireResponse.
    link_id: str
    # The transcript segments the answer was taken from (``AgentTranscribed.segment_id``).
    segment_ids: list[str] = msgspec.field(default_factory=list)


class AnamnesisRecorded(Event, frozen=True, kw_only=True):
    """The intake agent finished an anamnesis: a FHIR R4 QuestionnaireResponse and a summary.

    ``questionnaire_response`` is the FHIR resource as a JSON object (``resourceType``
    ``QuestionnaireResponse``); ``summary_pt_br`` is a short summary for the doctor, in pt-BR;
    ``transcript_refs`` links each answer (by ``linkId``) to the transcript segments it came from.
    ``room`` is the tenant's room name (not LiveKit's ``<tenant>~<room>``). Scheduling stores it
    (``GET /v1/consultations/{room}/anamnesis``); a record that is not a valid
    QuestionnaireResponse is dead-lettered.
    """

    TYPE: ClassVar[str] = "mediai.anamnesis.recorded.v1"
    PRODUCER: ClassVar[str] = "agent"
    STREAM: ClassVar[str] = PHI_STREAM
    dispatch_id: str
    room: str
    questionnaire_response: dict[str, Any]
    summary_pt_br: str
    transcript_refs: list[TranscriptRef] = msgspec.field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Doctors and appointments (business stream; see the module docstring for why)


class DoctorCreated(Event, frozen=True, kw_only=True):
    """A clinic registered a doctor who can be searched and booked."""

    TYPE: ClassVar[str] = "mediai.doctor.created.v1"
    PRODUCER: ClassVar[str] = "scheduling"
    doctor_id: str
    name: str
    specialty: str
    city: str
    insurances: list[str] = msgspec.field(default_factory=list)
    active: bool = True


class DoctorUpdated(Event, frozen=True, kw_only=True):
    """A doctor's details, schedule or active flag changed; the fields are the new values."""

    TYPE: ClassVar[str] = "mediai.doctor.updated.v1"
    PRODUCER: ClassVar[str] = "scheduling"
    doctor_id: str
    name: str
    specialty: str
    city: str
    insurances: list[str] = msgspec.field(default_factory=list)
    active: bool = True
    schedule_changed: bool = False


class AppointmentBooked(Event, frozen=True, kw_only=True):
    """A slot of a doctor was booked for a patient (``channel``: "api" or "agent")."""

    TYPE: ClassVar[str] = "mediai.appointment.booked.v1"
    PRODUCER: ClassVar[str] = "scheduling"
    appointment_id: str
    doctor_id: str
    # Opaque, chosen by the clinic; never a name or a contact.
    patient_ref: str
    starts_at: datetime
    ends_at: datetime
    channel: str = "api"


class AppointmentRescheduled(Event, frozen=True, kw_only=True):
    """A booked appointment moved to another slot of the same doctor."""

    TYPE: ClassVar[str] = "mediai.appointment.rescheduled.v1"
    PRODUCER: ClassVar[str] = "scheduling"
    appointment_id: str
    doctor_id: str
    patient_ref: str
    previous_starts_at: datetime
    previous_ends_at: datetime
    starts_at: datetime
    ends_at: datetime
    channel: str = "api"


class AppointmentCancelled(Event, frozen=True, kw_only=True):
    """A booked appointment was cancelled; its slot is free again."""

    TYPE: ClassVar[str] = "mediai.appointment.cancelled.v1"
    PRODUCER: ClassVar[str] = "scheduling"
    appointment_id: str
    doctor_id: str
    patient_ref: str
    starts_at: datetime
    ends_at: datetime
    channel: str = "api"


EVENTS: tuple[type[Event], ...] = (
    AnamnesisRecorded,
    DoctorCreated,
    DoctorUpdated,
    AppointmentBooked,
    AppointmentRescheduled,
    AppointmentCancelled,
)
