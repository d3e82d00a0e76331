"""The token service: LiveKit access tokens scoped to one room of the caller's tenant."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec
from litestar import Litestar, post
from litestar.params import JSONBody
from livekit import api as livekit_api

from services.token.core import TokenRequestError, token_ttl
from shared.config import Settings
from shared.events import TokenIssued
from shared.http import ApiError, BusDep, CallerTenant, SettingsDep, create_service_app
from shared.naming import (
    IDENTITY,
    IDENTITY_RULE,
    PATIENT_REF_ATTRIBUTE,
    ROOM_NAME,
    ROOM_NAME_RULE,
    PatientRef,
    livekit_room,
)

RoomName = Annotated[str, msgspec.Meta(pattern=ROOM_NAME.pattern, description=ROOM_NAME_RULE)]
Identity = Annotated[str, msgspec.Meta(pattern=IDENTITY.pattern, description=IDENTITY_RULE)]


class CreateTokenRequest(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True
):
    """The spec's CreateTokenRequest, plus ``patientRef``: when the participant is a patient,
    the clinic's pseudonymous id of that patient, signed into the token as the participant
    attribute ``mediai.patient_ref`` (so whoever sees the participant's name knows whose
    personal data it is). Never a name, CPF or contact."""

    room: RoomName
    identity: Identity
    name: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    can_publish: bool = True
    can_subscribe: bool = True
    ttl: Annotated[str, msgspec.Meta(examples=["2h", "30m"])] | None = None
    patient_ref: PatientRef | None = None


class TokenResponse(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    token: str
    ws_url: str


@post("/v1/tokens", operation_id="createToken", summary="Issue a LiveKit access token")
async def create_token(
    data: JSONBody[CreateTokenRequest], tenant: CallerTenant, bus: BusDep, settings: SettingsDep
) -> TokenResponse:
    try:
        ttl = token_ttl(
            data.ttl, default=settings.token_ttl_default, maximum=settings.token_ttl_max
        )
    except TokenRequestError as error:
        raise ApiError(str(error), code="invalid_ttl") from None
    grants = livekit_api.VideoGrants(
        room_join=True,
        room=livekit_room(tenant.id, data.room),
        can_publish=data.can_publish,
        can_subscribe=data.can_subscribe,
        can_publish_data=data.can_publish,
        # The attributes are the clinic's word: the participant may not rewrite them.
        can_update_own_metadata=False,
    )
    attributes = {PATIENT_REF_ATTRIBUTE: data.patient_ref} if data.patient_ref else {}
    jwt = (
        livekit_api.AccessToken(settings.livekit_api_key, settings.livekit_api_secret)
        .with_identity(data.identity)
        .with_name(data.name or data.identity)
        .with_attributes(attributes)
        .with_ttl(ttl)
        .with_grants(grants)
        .to_jwt()
    )
    await bus.publish(
        TokenIssued(
            room=data.room,
            identity=data.identity,
            can_publish=data.can_publish,
            can_subscribe=data.can_subscribe,
            ttl_seconds=int(ttl.total_seconds()),
            expires_at=datetime.now(UTC) + ttl,
            patient_ref=data.patient_ref or "",
        ),
        tenant=tenant.id,
        key=data.room,
    )
    return TokenResponse(token=jwt, ws_url=settings.livekit_url)


def create_app(settings: Settings) -> Litestar:
    return create_service_app(
        service="token",
        settings=settings,
        route_handlers=[create_token],
        description="LiveKit access tokens, each scoped to one room of the caller's tenant.",
    )
