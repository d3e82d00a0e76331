"""The token service: LiveKit access tokens scoped to one room of the caller's tenant, and the
short-lived view tokens browsers hold instead of API keys (shared/viewtokens.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

import msgspec
from litestar import Litestar, post
from litestar.datastructures import State
from litestar.params import JSONBody
from livekit import api as livekit_api

from services.token.core import TokenRequestError, person_role, token_ttl
from shared.bus import Bus
from shared.config import Settings
from shared.contract import BUS_UNAVAILABLE, documented, errors
from shared.events import TokenIssued
from shared.http import ApiError, CallerTenant, ForbiddenError, SettingsDep, create_service_app
from shared.naming import Identity, PatientRef, RoomName, livekit_room, whole
from shared.participants import PATIENT, PATIENT_REF_ATTRIBUTE, PERSON_ROLES, ROLE_ATTRIBUTE
from shared.viewtokens import (
    TTL_DEFAULT,
    TTL_MAX,
    View,
    ViewForbiddenError,
    issue,
    narrowed,
    new_grant,
    view_scope,
)


class CreateTokenRequest(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True
):
    """The spec's CreateTokenRequest, plus ``role``: who the person is in the consultation,
    signed into the token (agents and frontends trust it; the participant cannot change it).
    There is no way to ask for another participant kind (e.g. an agent's): unknown fields are
    rejected. ``patientRef``, for a patient's token: the clinic's pseudonymous id of that
    patient, signed in as the attribute ``mediai.patient_ref`` (so whoever sees the
    participant's name knows whose personal data it is). Never a name, CPF or contact."""

    room: RoomName
    identity: Identity
    name: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    can_publish: bool = True
    can_subscribe: bool = True
    ttl: (
        Annotated[
            str,
            msgspec.Meta(
                examples=["2h", "30m"],
                description=TTL_RULE,
                extra_json_schema=documented(pattern=whole(r"\s*[0-9]+\s*[smhd]?\s*")),
            ),
        ]
        | None
    ) = None
    # A plain string, not a Literal: an unknown role gets our own 400 listing the valid ones.
    role: Annotated[
        str,
        msgspec.Meta(
            examples=list(PERSON_ROLES), extra_json_schema=documented(enum=list(PERSON_ROLES))
        ),
    ] = PATIENT
    patient_ref: PatientRef | None = None


TTL_RULE = (
    "the token's lifetime: seconds, or a number of s, m, h or d (`30m`, `2h`); at least 60s and "
    "at most the deployment's maximum (MEDIAI_TOKEN_TTL_MAX, 6h by default)"
)


class TokenResponse(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    token: str
    ws_url: str


@post(
    "/v1/tokens",
    operation_id="createToken",
    summary="Issue a LiveKit access token",
    responses=errors(
        {
            400: {
                "invalid_ttl": TTL_RULE,
                "invalid_role": "`role` is not a person's role (`details` list the valid ones)",
                "patient_ref_not_allowed": "`patientRef` is only for a patient's token",
            },
            503: BUS_UNAVAILABLE,
        }
    ),
    opt=view_scope("tokens:create"),
)
async def create_token(
    data: JSONBody[CreateTokenRequest], tenant: CallerTenant, state: State
) -> TokenResponse:
    # The bus and the settings from the app's state rather than as dependencies: Litestar
    # resolves two or more dependencies of a handler in an anyio task group, a task each, on
    # every request; with the tenant alone there is none (the hottest route, issue 13).
    bus: Bus = state.bus
    settings: Settings = state.settings
    try:
        ttl = token_ttl(
            data.ttl, default=settings.token_ttl_default, maximum=settings.token_ttl_max
        )
    except TokenRequestError as error:
        raise ApiError(str(error), code="invalid_ttl") from None
    try:
        role = person_role(data.role)
    except TokenRequestError as error:
        details = [{"field": "role", "valid": list(PERSON_ROLES)}]
        raise ApiError(str(error), code="invalid_role", details=details) from None
    if data.patient_ref and role != PATIENT:
        raise ApiError(
            f"patientRef names the patient a token is for; a {role}'s token takes none",
            code="patient_ref_not_allowed",
            details=[{"field": "patientRef", "role": role}],
        )
    grants = livekit_api.VideoGrants(
        room_join=True,
        room=livekit_room(tenant.id, data.room),
        can_publish=data.can_publish,
        can_subscribe=data.can_subscribe,
        can_publish_data=data.can_publish,
        # The attributes are the clinic's word: the participant may not rewrite them.
        can_update_own_metadata=False,
    )
    attributes = {ROLE_ATTRIBUTE: role}
    if data.patient_ref:
        attributes[PATIENT_REF_ATTRIBUTE] = data.patient_ref
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
            role=role,
            ttl_seconds=int(ttl.total_seconds()),
            expires_at=datetime.now(UTC) + ttl,
            patient_ref=data.patient_ref or "",
        ),
        tenant=tenant.id,
        key=data.room,
    )
    return TokenResponse(token=jwt, ws_url=settings.livekit_url)


class CreateViewTokenRequest(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True
):
    """A view token for a browser: ``clinic`` (the tenant's sessions, dispatches, usage,
    audits; personal parts only with ``personal``) or ``doctor`` (bound to one consultation,
    ``dispatchId``, and its ``room``: that anamnesis and timeline, and a copilot dispatch)."""

    view: View
    dispatch_id: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] | None = None
    room: RoomName | None = None
    ttl: Annotated[str, msgspec.Meta(examples=["15m", "1h"])] | None = None
    personal: bool = False


class ViewTokenResponse(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    token: str
    view: str
    scopes: list[str]
    personal: bool
    dispatch_id: str
    room: str
    expires_at: datetime


@post(
    "/v1/view-tokens",
    operation_id="createViewToken",
    summary="Exchange an API key (or a clinic's view token) for a short-lived view token",
    opt=view_scope("views:create"),
)
async def create_view_token(
    data: JSONBody[CreateViewTokenRequest], tenant: CallerTenant, settings: SettingsDep
) -> ViewTokenResponse:
    try:
        ttl = token_ttl(data.ttl, default=TTL_DEFAULT, maximum=TTL_MAX)
    except TokenRequestError as error:
        raise ApiError(str(error), code="invalid_ttl") from None
    now = int(time.time())
    try:
        grant = narrowed(
            tenant.grant,
            new_grant(
                tenant=tenant.id,
                tenant_name=tenant.name,
                view=data.view,
                now=now,
                ttl=int(ttl.total_seconds()),
                dispatch=data.dispatch_id or "",
                room=data.room or "",
                personal=data.personal,
            ),
        )
    except ViewForbiddenError as error:
        if data.view == "doctor" and not (data.dispatch_id and data.room):
            raise ApiError(str(error), code="view_unbound") from None
        raise ForbiddenError(str(error)) from None
    return ViewTokenResponse(
        token=issue(grant, settings.view_token_secret),
        view=grant.view,
        scopes=list(grant.scopes),
        personal=grant.personal,
        dispatch_id=grant.dispatch,
        room=grant.room,
        expires_at=datetime.fromtimestamp(grant.expires_at, UTC),
    )


def create_app(settings: Settings) -> Litestar:
    return create_service_app(
        service="token",
        settings=settings,
        route_handlers=[create_token, create_view_token],
        description="LiveKit access tokens, each scoped to one room of the caller's tenant, "
        "and short-lived view tokens for browsers.",
    )
