"""Who a participant of a room is: the role in its signed token, never the spelling of its name.

The token service writes the clinic's choice (``patient`` or ``doctor``) into the LiveKit access
token as the participant attribute ``mediai.role``, with ``canUpdateOwnMetadata`` false, so the
participant cannot change it, and never sets the participant's kind. Agent workers set the same
attribute to their role's name (``copilot``, ``intake``…) and LiveKit marks them kind ``agent``,
which no token the token service issues can claim. Agents choose whom to write to by this
attribute; a frontend trusts a message only from a sender whose kind and role say who it is
(docs/agents-roles.md, "For frontends").
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.naming import is_patient_ref

ROLE_ATTRIBUTE = "mediai.role"
# On a patient's token: the clinic's pseudonymous id of the patient the participant is
# (``shared.naming.PATIENT_REF``), so whoever reads the participant's name knows whose personal
# data it is.
PATIENT_REF_ATTRIBUTE = "mediai.patient_ref"
PATIENT = "patient"
DOCTOR = "doctor"
# The roles a clinic may give a person in a token; the first is the default.
PERSON_ROLES = (PATIENT, DOCTOR)


def patient_ref_of(attributes: Mapping[str, str]) -> str:
    """The patient a participant is, as the clinic signed it into the token; "" when none, or
    when the attribute is not a patient reference (a token made outside MediAI)."""
    ref = attributes.get(PATIENT_REF_ATTRIBUTE, "")
    return ref if is_patient_ref(ref) else ""


def person_role(attributes: dict[str, str]) -> str:
    """The role a person's token gave it; a token without one (made outside MediAI) is a
    patient's: the role that is sent the least."""
    role = attributes.get(ROLE_ATTRIBUTE, PATIENT)
    return role if role in PERSON_ROLES else PATIENT
