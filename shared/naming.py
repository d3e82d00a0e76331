"""Names that cross service boundaries: their patterns, and how a tenant's room maps to a
LiveKit room.

A tenant names its rooms freely within ``ROOM_NAME``; in LiveKit the room is
``<tenant id>~<room>`` so two clinics can use the same name and never meet. ``~`` is outside
every alphabet a tenant may use, so the mapping is reversible.

Every pattern here matches the whole string, and means the same to Python's ``re`` (what
msgspec and the services use) and to JavaScript's ``RegExp`` (what clients generated from the
OpenAPI documents use): see ``whole``. Room names, identities and ``patientRef`` are
pseudonymous identifiers that end up in NATS subjects and LiveKit: never a person's name.
"""

from __future__ import annotations

import re
from typing import Annotated

import msgspec


def whole(body: str) -> str:
    """``body`` as a pattern of the whole string, with the same meaning in Python and JavaScript.

    ``$`` alone also matches before a final newline in Python, so ``"consulta-1\\n"`` would pass
    as a room that prints like ``consulta-1``; Python's ``\\Z`` does not exist in JavaScript.
    ``(?!\\n)$`` is the end of the string in both. ``body`` must not have a top-level ``|``.
    """
    return rf"^{body}(?!\n)$"


ROOM_NAME = re.compile(whole(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"))
IDENTITY = re.compile(whole(r"[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}"))
# The clinic's own pseudonymous id of a patient (e.g. "pac-000123"). It travels in clear in
# events, NATS subjects, LiveKit attributes and the names of the patient's data keys, and is
# never encrypted nor erased, so it must never contain a name, a CPF or a contact: the alphabet
# leaves out "@", ".", "+", "(" and spaces, so an e-mail, a formatted CPF or a phone number
# cannot pass.
PATIENT_REF = re.compile(whole(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"))
TENANT_ID = re.compile(whole(r"t[a-z0-9]{10}"))
# A file or playlist name chosen by the caller (egress), without extension.
FILE_NAME = re.compile(whole(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"))
# A language tag as the agents take it: "pt-BR", "en", "spa".
LANGUAGE = re.compile(whole(r"[a-z]{2,3}(-[A-Z]{2})?"))
_SEPARATOR = "~"
# The tenant of what is not a tenant's: rooms made outside MediAI, the platform's own events.
SYSTEM_TENANT = "system"

ROOM_NAME_RULE = "1-64 characters: letters, digits, '-' and '_', starting with a letter or digit"
IDENTITY_RULE = (
    "1-128 characters: letters, digits, '-', '_', '.', '@' and ':', starting with a letter or digit"
)
FILE_NAME_RULE = "1-64 characters: letters, digits, '-' and '_', starting with a letter or digit"
PATIENT_REF_RULE = (
    "the clinic's pseudonymous id of the patient: 1-64 characters, letters, digits, '-' and '_', "
    "starting with a letter or digit; it must never contain names, CPF or contacts"
)

# The types request and message bodies use (msgspec validates them; OpenAPI shows the pattern).
RoomName = Annotated[str, msgspec.Meta(pattern=ROOM_NAME.pattern, description=ROOM_NAME_RULE)]
Identity = Annotated[str, msgspec.Meta(pattern=IDENTITY.pattern, description=IDENTITY_RULE)]
PatientRef = Annotated[
    str,
    msgspec.Meta(
        pattern=PATIENT_REF.pattern, description=PATIENT_REF_RULE, examples=["pac-000123"]
    ),
]
TenantId = Annotated[str, msgspec.Meta(pattern=TENANT_ID.pattern)]
FileName = Annotated[str, msgspec.Meta(pattern=FILE_NAME.pattern, description=FILE_NAME_RULE)]
Language = Annotated[str, msgspec.Meta(pattern=LANGUAGE.pattern, examples=["pt-BR", "en-US"])]


def is_room_name(name: str) -> bool:
    return ROOM_NAME.fullmatch(name) is not None


def is_identity(identity: str) -> bool:
    return IDENTITY.fullmatch(identity) is not None


def is_patient_ref(ref: str) -> bool:
    return PATIENT_REF.fullmatch(ref) is not None


def livekit_room(tenant_id: str, room: str) -> str:
    """The LiveKit room name of a tenant's room."""
    return f"{tenant_id}{_SEPARATOR}{room}"


def split_livekit_room(livekit_name: str) -> tuple[str, str] | None:
    """``(tenant id, room)`` of a LiveKit room name, or None if it is not one of ours."""
    tenant_id, separator, room = livekit_name.partition(_SEPARATOR)
    if not separator or not TENANT_ID.fullmatch(tenant_id) or not is_room_name(room):
        return None
    return tenant_id, room


def tenant_room(livekit_name: str) -> tuple[str, str]:
    """``(tenant, room)`` of a LiveKit room name; a room not made by MediAI stays whole under
    the ``system`` tenant, so it is still recorded rather than dropped."""
    parts = split_livekit_room(livekit_name)
    return parts if parts is not None else (SYSTEM_TENANT, livekit_name)
