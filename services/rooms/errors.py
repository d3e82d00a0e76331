"""The rooms service's errors, with the HTTP status and stable code of each, and their OpenAPI
descriptions."""

from __future__ import annotations

from litestar.openapi.datastructures import ResponseSpec

from shared.http import ApiError, ErrorBody, NotFoundError, ServiceUnavailableError


class InvalidNameError(ApiError):
    code = "invalid_name"


class RoomNotFoundError(NotFoundError):
    code = "room_not_found"


class ParticipantNotFoundError(NotFoundError):
    code = "participant_not_found"


class RoomExistsError(ApiError):
    status_code = 409
    code = "room_exists"


class EgressUnavailableError(ServiceUnavailableError):
    code = "egress_unavailable"


class IngressUnavailableError(ServiceUnavailableError):
    code = "ingress_unavailable"


class LiveKitUnavailableError(ServiceUnavailableError):
    code = "livekit_unavailable"
    dependency = "livekit"  # an outage, for shared.failures: wait, never dead-letter


_DESCRIPTIONS = {
    400: "Invalid request: a malformed body, or a room name or identity outside the rules",
    401: "Missing or invalid API key",
    404: "No such room, participant, egress or ingress for this tenant",
    409: "A room of that name is already open",
    503: "LiveKit (or its egress/ingress service) or the event bus is unavailable; retry later",
}


def responses(*statuses: int) -> dict[int, ResponseSpec]:
    """The error answers of an endpoint, for OpenAPI (401 and 503 apply to every endpoint)."""
    return {
        status: ResponseSpec(ErrorBody, description=_DESCRIPTIONS[status])
        for status in sorted({401, 503, *statuses})
    }
