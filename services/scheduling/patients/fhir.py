"""What MediAI holds about a patient, as a FHIR R4 Bundle (a pure mapping, no I/O).

The export's container is a ``collection`` Bundle: the patient (its reference, the names and
contacts MediAI was given), appointments, anamnesis records (QuestionnaireResponse, as stored),
consultations with agents (Encounter), what was said and written (Communication: transcripts,
dispatch instructions, agent commands, copilot hints, room metadata), red flags (Flag), consent
decisions (Consent), every read of the patient's data (AuditEvent) and the erasure certificates
(DocumentReference). Values whose key was destroyed read ``[apagado]``.
"""

from __future__ import annotations

import base64
import html
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from services.scheduling.store import Appointment
from shared.access import Entry
from shared.events import Envelope
from shared.events.agents import AgentCommandIssued, AgentDispatchRequested, AgentTranscribed
from shared.events.clinical import ConsentGiven, ConsentRefused, CopilotHintWritten, RedFlagRaised
from shared.events.reconciliation import ParticipantFound
from shared.events.rooms import ParticipantJoined, ParticipantUpdated, RoomCreated

Resource = dict[str, Any]
_NAMESPACE = uuid.UUID("6f1b8f0e-3d0c-4c35-8a55-0d1f3e3c9a11")
_XHTML = "http://www.w3.org/1999/xhtml"


def _when(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _text(text: str) -> dict[str, str]:
    return {"text": text}


def patient_url(tenant: str, patient_ref: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{tenant}/{patient_ref}')}"


def patient(
    tenant: str, patient_ref: str, names: Iterable[str], contacts: Iterable[str]
) -> Resource:
    resource: Resource = {
        "resourceType": "Patient",
        "identifier": [{"system": f"urn:mediai:{tenant}:patient-ref", "value": patient_ref}],
    }
    if names := sorted(set(n for n in names if n)):
        resource["name"] = [_text(name) for name in names]
    if contacts := sorted(set(c for c in contacts if c)):
        resource["telecom"] = [{"system": "other", "value": contact} for contact in contacts]
    return resource


def appointment(a: Appointment, subject: str) -> Resource:
    resource: Resource = {
        "resourceType": "Appointment",
        "id": a.id,
        "status": "cancelled" if a.status == "cancelled" else "booked",
        "start": _when(a.starts_at),
        "end": _when(a.ends_at),
        "created": _when(a.created_at),
        "serviceType": [_text(a.specialty)],
        "participant": [
            {"actor": {"reference": subject}, "status": "accepted"},
            {"actor": {"display": a.doctor_name}, "status": "accepted"},
        ],
    }
    if a.reason:
        resource["description"] = a.reason
    if a.cancel_reason:
        resource["cancelationReason"] = _text(a.cancel_reason)
    return resource


def questionnaire_response(record: dict[str, Any], subject: str) -> Resource:
    """A stored anamnesis as the clinical record it is, its summary as the narrative."""
    resource: Resource = dict(record["questionnaire_response"])
    resource["id"] = record["event_id"]
    resource.setdefault("subject", {"reference": subject})
    resource["text"] = {
        "status": "generated",
        "div": f'<div xmlns="{_XHTML}">{html.escape(record["summary_pt_br"])}</div>',
    }
    return resource


def access(entry: Entry) -> Resource:
    resource: Resource = {
        "resourceType": "AuditEvent",
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
        },
        "action": "R",
        "recorded": _when(entry.read_at),
        "agent": [{"who": {"display": entry.reader}, "requestor": True}],
        "source": {"observer": {"display": f"mediai-{entry.service}"}},
        "entity": [{"what": {"display": f"{entry.resource}/{entry.resource_id}"}}],
    }
    if entry.purpose:
        resource["purposeOfEvent"] = [_text(entry.purpose)]
    return resource


def certificate_document(certificate: msgspec.Struct, requested_at: datetime) -> Resource:
    data = base64.b64encode(msgspec.json.encode(certificate)).decode()
    return {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": _text("erasure certificate (LGPD Art. 18 VI)"),
        "date": _when(requested_at),
        "content": [{"attachment": {"contentType": "application/json", "data": data}}],
    }


def _communication(
    category: str, text: str, subject: str, sent: datetime, dispatch_id: str = "", **more: Any
) -> Resource:
    resource: Resource = {
        "resourceType": "Communication",
        "status": "completed",
        "category": [_text(category)],
        "subject": {"reference": subject},
        "sent": _when(sent),
        "payload": [{"contentString": text}],
        **more,
    }
    if dispatch_id:
        resource["encounter"] = {"reference": f"Encounter/{dispatch_id}"}
    return resource


def from_event(event: Envelope, subject: str) -> list[Resource]:
    """The resources one (opened) event about the patient becomes."""
    data, at = event.data, event.time
    if isinstance(data, AgentDispatchRequested):
        found: list[Resource] = [
            {
                "resourceType": "Encounter",
                "id": data.dispatch_id,
                "status": "unknown",
                "class": {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "VR",
                    "display": "virtual",
                },
                "serviceType": _text(f"AI agent: {data.role}"),
                "subject": {"reference": subject},
                "period": {"start": _when(data.requested_at)},
            }
        ]
        if data.instructions:
            found.append(
                _communication(
                    "agent-instructions", data.instructions, subject, at, data.dispatch_id
                )
            )
        return found
    if isinstance(data, AgentCommandIssued) and data.text:
        return [_communication("agent-command", data.text, subject, at, data.dispatch_id)]
    if isinstance(data, AgentTranscribed):
        speaker = {"display": data.participant_identity or data.speaker}
        return [
            _communication("transcript", data.text, subject, at, data.dispatch_id, sender=speaker)
        ]
    if isinstance(data, CopilotHintWritten):
        to = [{"display": who} for who in data.recipients]
        return [
            _communication("copilot-hint", data.text, subject, at, data.dispatch_id, recipient=to)
        ]
    if isinstance(data, RoomCreated) and data.metadata:
        return [_communication("room-metadata", data.metadata, subject, at)]
    if isinstance(data, RedFlagRaised):
        return [
            {
                "resourceType": "Flag",
                "status": "active",
                "category": [_text(data.category)],
                "code": _text(data.description or data.category),
                "subject": {"reference": subject},
                "period": {"start": _when(data.raised_at)},
                "encounter": {"reference": f"Encounter/{data.dispatch_id}"},
            }
        ]
    if isinstance(data, ConsentGiven | ConsentRefused):
        given = isinstance(data, ConsentGiven)
        by = data.given_by if isinstance(data, ConsentGiven) else data.refused_by
        performer = f"{by} ({data.guardian_relation})" if data.guardian_relation else by
        return [
            {
                "resourceType": "Consent",
                "status": "active" if given else "rejected",
                "scope": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                            "code": "treatment",
                        }
                    ]
                },
                "category": [_text(f"AI assistance ({data.role})")],
                "patient": {"reference": subject},
                "dateTime": _when(
                    data.given_at if isinstance(data, ConsentGiven) else data.refused_at
                ),
                "performer": [{"display": performer}],
                "policyRule": _text(data.wording),
                "provision": {"type": "permit" if given else "deny"},
            }
        ]
    return []


def names_in(events: Iterable[Envelope]) -> list[str]:
    """The names the patient appeared under in rooms."""
    found = []
    for event in events:
        if isinstance(event.data, ParticipantJoined | ParticipantFound | ParticipantUpdated):
            found.append(event.data.name or "")
    return found


def bundle(
    *,
    tenant: str,
    patient_ref: str,
    now: datetime,
    appointments: list[Appointment],
    anamneses: list[dict[str, Any]],
    events: list[Envelope],
    accesses: list[Entry],
    certificates: Sequence[tuple[msgspec.Struct, datetime]],
) -> Resource:
    subject = patient_url(tenant, patient_ref)
    names = [*names_in(events), *(a.patient_name or "" for a in appointments)]
    contacts = [a.patient_contact or "" for a in appointments]
    resources = [
        *(appointment(a, subject) for a in appointments),
        *(questionnaire_response(r, subject) for r in anamneses),
        *(r for event in events for r in from_event(event, subject)),
        *(access(entry) for entry in accesses),
        *(certificate_document(c, at) for c, at in certificates),
    ]
    entries = [{"fullUrl": subject, "resource": patient(tenant, patient_ref, names, contacts)}]
    entries += [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": r} for r in resources]
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": _when(now),
        "identifier": {"system": "urn:mediai:export", "value": str(uuid.uuid4())},
        "entry": entries,
    }
