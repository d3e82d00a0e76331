"""The rooms service's errors, with the HTTP status and stable code of each, and their OpenAPI
descriptions."""

from __future__ import annotations

from collections.abc import Mapping

from litestar.openapi.datastructures import ResponseSpec

from shared.contract import errors
from shared.http import ApiError, NotFoundError, ServiceUnavailableError
from shared.naming import IDENTITY_RULE, ROOM_NAME_RULE


class InvalidNameError(ApiError):
    code = "invalid_name"


class RoomNotFoundError(NotFoundError):
    code = "room_not_found"


class ParticipantNotFoundError(NotFoundError):
    code = "participant_not_found"


class TrackNotFoundError(NotFoundError):
    code = "track_not_found"


class RoomExistsError(ApiError):
    status_code = 409
    code = "room_exists"


class RemoteUnmuteDisabledError(ApiError):
    status_code = 403
    code = "remote_unmute_disabled"


class EgressUnavailableError(ServiceUnavailableError):
    code = "egress_unavailable"


class IngressUnavailableError(ServiceUnavailableError):
    code = "ingress_unavailable"


class LiveKitUnavailableError(ServiceUnavailableError):
    code = "livekit_unavailable"
    dependency = "livekit"  # an outage, for shared.failures: wait, never dead-letter


# What each code means, for the OpenAPI document (``responses``).
_CODES: dict[int, dict[str, str]] = {
    400: {
        "invalid_room_name": f"the room in the path breaks the rule: {ROOM_NAME_RULE}",
        "invalid_identity": f"the identity in the path breaks the rule: {IDENTITY_RULE}",
        "livekit_refused": "LiveKit refused the request as invalid or, as things stand, not "
        "possible (the message says why)",
    },
    403: {
        "remote_unmute_disabled": "unmuting someone's track is off in this LiveKit deployment "
        "(its `room.enable_remote_unmute`, off by default: people unmute themselves)",
    },
    404: {
        "room_not_found": "no open room of that name in this tenant",
        "participant_not_found": "no participant of that identity in the room",
        "track_not_found": "the participant has no published track of that sid",
        "egress_not_found": "no egress of that id in this tenant",
        "ingress_not_found": "no ingress of that id in this tenant",
    },
    503: {
        "livekit_unavailable": "LiveKit cannot be reached, or failed; retry after `Retry-After`",
        "egress_unavailable": "no LiveKit egress service is connected to the LiveKit server",
        "ingress_unavailable": "no LiveKit ingress service is connected to the LiveKit server",
    },
}


def responses(
    *codes: str, more: Mapping[int, Mapping[str, str]] | None = None
) -> dict[int, ResponseSpec]:
    """The error answers of an endpoint for OpenAPI, by its codes (``more``: codes of one
    endpoint only, with their meaning)."""
    chosen: dict[int, dict[str, str]] = {}
    for status, known in _CODES.items():
        for code in codes:
            if code in known:
                chosen.setdefault(status, {})[code] = known[code]
    unknown = set(codes) - {c for known in _CODES.values() for c in known}
    if unknown:
        raise ValueError(f"undocumented rooms error codes: {sorted(unknown)}")
    for status, extra in (more or {}).items():
        chosen.setdefault(status, {}).update(extra)
    return errors(chosen)
