"""Names that cross service boundaries: how a tenant's room maps to a LiveKit room.

A tenant names its rooms freely within ``ROOM_NAME``; in LiveKit the room is
``<tenant id>~<room>`` so two clinics can use the same name and never meet. ``~`` is outside
every alphabet a tenant may use, so the mapping is reversible.
"""

from __future__ import annotations

import re

ROOM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
IDENTITY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$")
TENANT_ID = re.compile(r"^t[a-z0-9]{10}$")
_SEPARATOR = "~"
# The tenant of what is not a tenant's: rooms made outside MediAI, the platform's own events.
SYSTEM_TENANT = "system"

ROOM_NAME_RULE = "1-64 characters: letters, digits, '-' and '_', starting with a letter or digit"
IDENTITY_RULE = (
    "1-128 characters: letters, digits, '-', '_', '.', '@' and ':', starting with a letter or digit"
)


def is_room_name(name: str) -> bool:
    return bool(ROOM_NAME.match(name))


def is_identity(identity: str) -> bool:
    return bool(IDENTITY.match(identity))


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
