"""Events of the medical roles: consent, anamnesis records, copilot hints, scheduling.

Where patient data goes: clinical content (the anamnesis record, its summary, transcript
references) lives only on the PHI stream, whose short retention bounds how long health data sits
in the log and which billing never reads. The booking events live on the business stream: they
are business facts (a slot was taken, moved, freed) that other services may count for years, so
they carry an opaque ``patient_ref`` chosen by the clinic (its own pseudonymous patient id,
``shared.naming.PATIENT_REF``) and never the patient's name, contact or reason for the visit,
which stay in the scheduling database where the clinic can correct or erase them. Every event
about a patient carries that ``patient_ref`` ("" when the dispatch named no patient).

By the same rule, consent decisions and counts of copilot hints and avatar fallbacks are business
facts (business stream, no content), while urgent red flags and what a hint said are health data
(PHI stream only).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar

import msgspec

from shared.events.base import PHI_STREAM, Event
from shared.events.privacy import CLINICAL, Clinical, Personal, Plain, Pseudonym

# ---------------------------------------------------------------------------------------------
# Anamnesis (PHI stream)


class TranscriptRef(msgspec.Struct, frozen=True, kw_only=True):
    """Where one answer of a QuestionnaireResponse came from, so a clinician can check it."""

    # The ``linkId`` of the answered item in the QuestionnaireResponse.
    link_id: Plain
    # The transcript segments the answer was taken from (``AgentTranscribed.segment_id``).
    segment_ids: list[Plain] = msgspec.field(default_factory=list)


class AnamnesisRecorded(Event, frozen=True, kw_only=True):
    """The intake agent finished an anamnesis: a FHIR R4 QuestionnaireResponse and a summary.

    ``questionnaire_response`` is the FHIR resource as a JSON object (``resourceType``
    ``QuestionnaireResponse``); ``summary_pt_br`` is a short summary for the doctor, in pt-BR;
    ``transcript_refs`` links each answer (by ``linkId``) to the transcript segments it came from.
    ``room`` is the tenant's room name (not LiveKit's ``<tenant>~<room>``): where it happened,
    never how it is found, since a room name is reused. The consultation is ``dispatch_id``, and
    ``appointment_id`` when the dispatch came from an appointment; ``patient_ref`` is the
    dispatch's patient ("" when it named none). Scheduling stores it and serves it by
    consultation (``GET /v1/consultations/{dispatchId}/anamnesis``,
    ``GET /v1/appointments/{appointmentId}/anamnesis``); a record that is not a valid
    QuestionnaireResponse is dead-lettered.
    """

    TYPE: ClassVar[str] = "mediai.anamnesis.recorded.v1"
    PRODUCER: ClassVar[str] = "agent"
    STREAM: ClassVar[str] = PHI_STREAM
    dispatch_id: Plain
    room: Pseudonym
    questionnaire_response: Annotated[dict[str, Any], CLINICAL]
    summary_pt_br: Clinical
    transcript_refs: list[TranscriptRef] = msgspec.field(default_factory=list)
    patient_ref: Pseudonym = ""
    appointment_id: Plain = ""


# ---------------------------------------------------------------------------------------------
# Doctors and appointments (business stream; see the module docstring for why)


class DoctorCreated(Event, frozen=True, kw_only=True):
    """A clinic registered a doctor who can be searched and booked."""

    TYPE: ClassVar[str] = "mediai.doctor.created.v1"
    PRODUCER: ClassVar[str] = "scheduling"
    doctor_id: Plain
    name: Personal
    specialty: Plain
    city: Plain
    insurances: list[Plain] = msgspec.field(default_factory=list)
    active: bool = True


class DoctorUpdated(Event, frozen=True, kw_only=True):
    """A doctor's details, schedule or active flag changed; the fields are the new values."""

    TYPE: ClassVar[str] = "mediai.doctor.updated.v1"
    PRODUCER: ClassVar[str] = "scheduling"
    doctor_id: Plain
    name: Personal
    specialty: Plain
    city: Plain
    insurances: list[Plain] = msgspec.field(default_factory=list)
    active: bool = True
    schedule_changed: bool = False


class AppointmentBooked(Event, frozen=True, kw_only=True):
    """A slot of a doctor was booked for a patient (``channel``: "api" or "agent")."""

    TYPE: ClassVar[str] = "mediai.appointment.booked.v1"
    PRODUCER: ClassVar[str] = "scheduling"
    appointment_id: Plain
    doctor_id: Plain
    # Opaque, chosen by the clinic; never a name or a contact.
    patient_ref: Pseudonym
    starts_at: datetime
    ends_at: datetime
    channel: Plain = "api"


class AppointmentRescheduled(Event, frozen=True, kw_only=True):
    """A booked appointment moved to another slot of the same doctor."""

    TYPE: ClassVar[str] = "mediai.appointment.rescheduled.v1"
    PRODUCER: ClassVar[str] = "scheduling"
    appointment_id: Plain
    doctor_id: Plain
    patient_ref: Pseudonym
    previous_starts_at: datetime
    previous_ends_at: datetime
    starts_at: datetime
    ends_at: datetime
    channel: Plain = "api"


class AppointmentCancelled(Event, frozen=True, kw_only=True):
    """A booked appointment was cancelled; its slot is free again."""

    TYPE: ClassVar[str] = "mediai.appointment.cancelled.v1"
    PRODUCER: ClassVar[str] = "scheduling"
    appointment_id: Plain
    doctor_id: Plain
    patient_ref: Pseudonym
    starts_at: datetime
    ends_at: datetime
    channel: Plain = "api"


# ---------------------------------------------------------------------------------------------
# Consent, urgent red flags, copilot hints, avatars (published by the agent; keyed by dispatch id)


class ConsentGiven(Event, frozen=True, kw_only=True):
    """The patient agreed to be assisted by an AI agent (and, when the room was being recorded,
    to the recording) before any clinical conversation. Consent is per consultation.

    On the business stream: the proof of consent is kept as long as the consultation's records.
    It says what was asked (``wording``: the version of the consent text) and which transcript
    segments hold the answer (``segment_ids``), never what was said.
    ``participant_identity`` is the LiveKit identity of who answered (opaque, chosen by the
    clinic); ``patient_ref`` is the dispatch's patient ("" when it named none).
    ``given_by`` says who consented: ``patient``, or ``guardian`` when the clinic dispatched
    for a minor (then the guardian was asked, and ``guardian_relation`` is what they said they
    are: ``mother``, ``father``, ``grandparent``, ``legal_guardian``, ``other``, or "" when
    not said).
    """

    TYPE: ClassVar[str] = "mediai.consent.given.v1"
    PRODUCER: ClassVar[str] = "agent"
    dispatch_id: Plain
    room: Pseudonym
    role: Plain
    participant_identity: Pseudonym = ""
    ai_assistance: bool = True
    # Whether the room was being recorded when consent was asked (then it covers recording too).
    recording: bool = False
    wording: Plain
    segment_ids: list[Plain] = msgspec.field(default_factory=list)
    given_at: datetime
    patient_ref: Pseudonym = ""
    given_by: Plain = "patient"
    guardian_relation: Plain = ""


class ConsentRefused(Event, frozen=True, kw_only=True):
    """The patient did not agree; the agent explained, said goodbye and left (the session ends
    ``completed`` with detail ``consent_refused``). ``refused`` says what was refused:
    ``ai_assistance`` or ``recording``. ``refused_by`` and ``guardian_relation`` say who
    answered, as ``ConsentGiven.given_by`` and ``guardian_relation`` do."""

    TYPE: ClassVar[str] = "mediai.consent.refused.v1"
    PRODUCER: ClassVar[str] = "agent"
    dispatch_id: Plain
    room: Pseudonym
    role: Plain
    participant_identity: Pseudonym = ""
    refused: Plain
    recording: bool = False
    wording: Plain
    segment_ids: list[Plain] = msgspec.field(default_factory=list)
    refused_at: datetime
    patient_ref: Pseudonym = ""
    refused_by: Plain = "patient"
    guardian_relation: Plain = ""


class RedFlagRaised(Event, frozen=True, kw_only=True):
    """Urgent: a patient reported a sign of emergency during a consultation; the agent told
    them to call SAMU (192) now. The clinic should act at once.

    ``category`` is a stable code (``chest_pain_dyspnea``, ``stroke_signs``,
    ``suicidal_ideation``, ``severe_bleeding``, ``loss_of_consciousness``,
    ``severe_breathing_difficulty``, ``anaphylaxis``, ``other``); ``description`` is the agent's
    short pt-BR account of what was reported; ``segment_ids`` cite the transcript. Health data:
    PHI stream only. ``patient_ref`` is the dispatch's patient ("" when it named none).
    """

    TYPE: ClassVar[str] = "mediai.red_flag.raised.v1"
    PRODUCER: ClassVar[str] = "agent"
    STREAM: ClassVar[str] = PHI_STREAM
    dispatch_id: Plain
    room: Pseudonym
    role: Plain
    participant_identity: Pseudonym = ""
    category: Plain
    description: Personal = ""
    segment_ids: list[Plain] = msgspec.field(default_factory=list)
    raised_at: datetime
    patient_ref: Pseudonym = ""


class CopilotHintSent(Event, frozen=True, kw_only=True):
    """The copilot sent the doctor a hint (counted, never read: no content here).

    ``kind``: ``question`` (a suggested question), ``reminder`` (a procedure from the
    dispatch's instructions), ``red_flag`` or ``note``. ``hint_id`` joins it to its content in
    ``CopilotHintWritten`` (PHI stream). ``recipients`` is how many participants got it.
    """

    TYPE: ClassVar[str] = "mediai.copilot.hint_sent.v1"
    PRODUCER: ClassVar[str] = "agent"
    dispatch_id: Plain
    room: Pseudonym
    hint_id: Plain
    kind: Plain
    sequence: int
    recipients: int = 1
    sent_at: datetime


class CopilotHintWritten(Event, frozen=True, kw_only=True):
    """What a copilot hint said, exactly as the doctor received it (PHI stream only), and to
    whom (``recipients``: identities). Joined to ``CopilotHintSent`` by ``hint_id``.
    ``patient_ref`` is the patient the hint is about, the dispatch's ("" when it named none)."""

    TYPE: ClassVar[str] = "mediai.copilot.hint_written.v1"
    PRODUCER: ClassVar[str] = "agent"
    STREAM: ClassVar[str] = PHI_STREAM
    dispatch_id: Plain
    room: Pseudonym
    hint_id: Plain
    kind: Plain
    text: Personal
    recipients: list[Pseudonym] = msgspec.field(default_factory=list)
    segment_ids: list[Plain] = msgspec.field(default_factory=list)
    sent_at: datetime
    patient_ref: Pseudonym = ""


class AvatarUnavailable(Event, frozen=True, kw_only=True):
    """The avatar asked for (``provider``: ``bey`` or ``tavus``) could not be used, so the
    agent carries on with voice only. ``reason``: ``missing_credentials`` (``detail`` names the
    setting), ``unknown_provider``, ``start_failed`` (the provider refused or did not answer:
    ``detail`` has the error class) or ``not_joined`` (it never appeared in the room)."""

    TYPE: ClassVar[str] = "mediai.avatar.unavailable.v1"
    PRODUCER: ClassVar[str] = "agent"
    dispatch_id: Plain
    room: Pseudonym
    role: Plain
    provider: Plain
    reason: Plain
    detail: Plain = ""
    at: datetime


EVENTS: tuple[type[Event], ...] = (
    AnamnesisRecorded,
    DoctorCreated,
    DoctorUpdated,
    AppointmentBooked,
    AppointmentRescheduled,
    AppointmentCancelled,
    ConsentGiven,
    ConsentRefused,
    RedFlagRaised,
    CopilotHintSent,
    CopilotHintWritten,
    AvatarUnavailable,
)
