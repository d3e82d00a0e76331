"""Names that cross service boundaries: how a tenant's room maps to a LiveKit room.

A tenant names its rooms freely within ``ROOM_NAME``; in LiveKit the room is
``<tenant id>~<room>`` so two clinics can use the same name and never meet. ``~`` is outside
every alphabet a tenant may use, so the mapping is reversible.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec

ROOM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
IDENTITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$")
TENANT_ID = re.compile(r"^t[a-z0-9]{10}$")
# The clinic's own pseudonymous id of a patient (e.g. "pac-000123"). It travels in clear in
# events, NATS subjects, LiveKit attributes and the names of the patient's data keys, and is
# never encrypted nor erased, so it must never contain a name, a CPF or a contact: the alphabet
# leaves out "@", ".", "+", "(" and spaces, so an e-mail, a formatted CPF or a phone number
# cannot pass. Whole string in Python and in JavaScript (OpenAPI clients): Python's "$" alone
# also matches before a final newline, and JavaScript has no "\Z"; "(?!\n)$" is the end in both.
PATIENT_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}(?!\n)$")
# The participant attribute, signed into a LiveKit token, naming the patient the participant is
# (so whoever reads the participant's name knows whose personal data it is).
PATIENT_REF_ATTRIBUTE = "mediai.patient_ref"
_SEPARATOR = "~"
# The tenant of what is not a tenant's: rooms made outside MediAI, the platform's own events.
SYSTEM_TENANT = "system"

ROOM_NAME_RULE = "1-64 characters: letters, digits, '-' and '_', starting with a letter or digit"
IDENTITY_RULE = (
    "1-128 characters: letters, digits, '-', '_', '.', '@' and ':', starting with a letter or digit"
)
PATIENT_REF_RULE = (
    "the clinic's pseudonymous id of the patient: 1-64 characters, letters, digits, '-' and '_', "
    "starting with a letter or digit; it must never contain names, CPF or contacts"
)
# The type of a ``patientRef`` in request bodies (msgspec validates it; OpenAPI shows the rule).
PatientRef = Annotated[
    str,
    msgspec.Meta(
        pattern=PATIENT_REF.pattern, description=PATIENT_REF_RULE, examples=["pac-000123"]
    ),
]


def is_room_name(name: str) -> bool:
    return bool(ROOM_NAME.match(name))


def is_identity(identity: str) -> bool:
    return bool(IDENTITY.match(identity))


def is_patient_ref(ref: str) -> bool:
    return PATIENT_REF.fullmatch(ref) is not None


def livekit_room(tenant_id: str, room: str) -> str:
    """The LiveKit room name of a tenant's room."""
    return f"{tenant_id}{_SEPARATOR}{room}"


def split_livekit_room(livekit_name: str) -> tuple[str, str] | None:
    """``(tenant id, room)`` of a LiveKit room name, or None if it is not one of ours."""
    tenant_id, separator, room = livekit_name.partition(_SEPARATOR)
    if not separator or not TENANT_ID.match(tenant_id) or not is_room_name(room):
        return None
    return tenant_id, room


def tenant_room(livekit_name: str) -> tuple[str, str]:
    """``(tenant, room)`` of a LiveKit room name; a room not made by MediAI stays whole under
    the ``system`` tenant, so it is still recorded rather than dropped."""
    parts = split_livekit_room(livekit_name)
    return parts if parts is not None else (SYSTEM_TENANT, livekit_name)
