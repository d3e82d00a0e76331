"""View tokens: what a browser holds instead of a clinic's API key.

A clinic's API key never stays in a browser. The clinic's backend (or the web console, once,
with the key it was given) exchanges it at ``POST /v1/view-tokens`` for a token that lives
minutes, belongs to one tenant, and carries only the scopes one view needs: the clinic's view
(its tenant's sessions, dispatches, usage, audits) or a doctor's view (one consultation's
anamnesis and timeline, and a copilot dispatched into one room).

The token is ``mv1.<claims>.<signature>``: the claims as base64url JSON, signed with HMAC-SHA256
under ``MEDIAI_VIEW_TOKEN_SECRET``, which every service shares (symmetric, so any service can
verify without asking the token service; one secret to rotate). Nothing here logs a token.

Routes opt in, one scope each, with ``view_scope`` in their ``opt``; a route that does not
accepts API keys only. ``shared.http.provide_tenant`` checks the scope and the route's bound
path parameters (a doctor's ``dispatch``); handlers check what only the body says
(``check_dispatch``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Any, Literal

import msgspec

PREFIX = "mv1."
# The route ``opt`` keys ``provide_tenant`` reads.
SCOPE_OPT = "view_scope"
BOUND_OPT = "view_bound"
PERSONAL_OPT = "view_personal"

# What a view token may be allowed to do, one scope per kind of route.
SCOPES = (
    "sessions:read",  # GET /v1/sessions, a session's timeline
    "anamnesis:read",  # GET /v1/consultations/{dispatchId}/anamnesis
    "agents:read",  # GET /v1/agents, /v1/agents/{id}
    "agents:dispatch",  # POST /v1/agents
    "usage:read",  # GET /v1/usage, /v1/invoices
    "audits:run",  # POST /v1/audits, GET /v1/audits/{id}
    "tokens:create",  # POST /v1/tokens (LiveKit tokens for the people of a consultation)
    "views:create",  # POST /v1/view-tokens: a clinic's view hands a doctor a narrower one
)
View = Literal["clinic", "doctor"]
VIEWS: dict[str, tuple[str, ...]] = {
    "clinic": SCOPES,
    "doctor": ("sessions:read", "anamnesis:read", "agents:dispatch"),
}
# The only agent a doctor's view may dispatch.
DOCTOR_AGENT_ROLES = ("copilot",)
TTL_DEFAULT = 15 * 60
TTL_MAX = 60 * 60


class ViewTokenError(ValueError):
    """The token is malformed, forged or expired (a 401); the message says which, never the
    token."""


class ViewForbiddenError(ValueError):
    """A valid token that does not allow this (a 403); the message says what it lacks."""


class Grant(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What a view token allows: signed, so every field is the issuer's word."""

    id: str
    tenant: str
    tenant_name: str
    view: View
    scopes: tuple[str, ...]
    # A doctor's view is bound to one consultation (the intake's dispatch id) and its room.
    dispatch: str = ""
    room: str = ""
    # Agent roles the token may dispatch (empty: any).
    agent_roles: tuple[str, ...] = ()
    # Whether the token's holder may read personal parts (transcripts, hint texts, red flags).
    personal: bool = False
    issued_at: int
    expires_at: int

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


_decode_grant = msgspec.json.Decoder(Grant)
_encode = msgspec.json.Encoder()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, signed: str) -> str:
    return _b64(hmac.new(secret.encode(), signed.encode(), hashlib.sha256).digest())


def is_view_token(credential: str) -> bool:
    return credential.startswith(PREFIX)


def issue(grant: Grant, secret: str) -> str:
    """The token for ``grant``."""
    signed = PREFIX + _b64(_encode.encode(grant))
    return f"{signed}.{_signature(secret, signed)}"


def verify(token: str, secret: str, *, now: float) -> Grant:
    """The grant a token carries, if its signature is ours and it has not expired."""
    signed, dot, signature = token.rpartition(".")
    if not dot or not signed.startswith(PREFIX):
        raise ViewTokenError("malformed view token")
    if not hmac.compare_digest(signature, _signature(secret, signed)):
        raise ViewTokenError("invalid view token")
    try:
        grant = _decode_grant.decode(_unb64(signed.removeprefix(PREFIX)))
    except (msgspec.DecodeError, msgspec.ValidationError, binascii.Error, ValueError):
        raise ViewTokenError("malformed view token") from None
    if now >= grant.expires_at:
        raise ViewTokenError("view token expired; ask for a new one")
    return grant


def new_grant(
    *,
    tenant: str,
    tenant_name: str,
    view: View,
    now: int,
    ttl: int,
    dispatch: str = "",
    room: str = "",
    personal: bool = False,
) -> Grant:
    """A fresh grant of a view's scopes. A doctor's view is bound to a consultation and its
    room, may dispatch only a copilot, and reads that consultation's personal parts."""
    if view == "doctor":
        if not dispatch or not room:
            raise ViewForbiddenError("a doctor's view is bound to a consultation and its room")
        return Grant(
            id=secrets.token_hex(8),
            tenant=tenant,
            tenant_name=tenant_name,
            view=view,
            scopes=VIEWS[view],
            dispatch=dispatch,
            room=room,
            agent_roles=DOCTOR_AGENT_ROLES,
            personal=True,
            issued_at=now,
            expires_at=now + ttl,
        )
    return Grant(
        id=secrets.token_hex(8),
        tenant=tenant,
        tenant_name=tenant_name,
        view=view,
        scopes=VIEWS[view],
        personal=personal,
        issued_at=now,
        expires_at=now + ttl,
    )


def narrowed(parent: Grant | None, child: Grant) -> Grant:
    """``child`` as ``parent`` (the caller's own view token; None for an API key) may hand it
    out: never more scopes, never more personal data, never outliving the parent."""
    if parent is None:
        return child
    if parent.dispatch or parent.room:
        raise ViewForbiddenError("a view bound to a consultation cannot hand out views")
    extra = set(child.scopes) - set(parent.scopes)
    if extra:
        raise ViewForbiddenError(f"this view token lacks the scopes {sorted(extra)}")
    if child.personal and not parent.personal:
        raise ViewForbiddenError("this view token may not hand out personal data")
    return msgspec.structs.replace(child, expires_at=min(child.expires_at, parent.expires_at))


def view_scope(scope: str, *, personal: bool = False, **bound: str) -> dict[str, Any]:
    """A route's ``opt``: view tokens with ``scope`` may call it (with ``personal``, only
    those that may read personal data); ``bound`` maps a path parameter to the grant field it
    must equal when the grant sets that field (``dispatch_id="dispatch"``: a doctor's token
    reads only its own consultation)."""
    if scope not in SCOPES:
        raise ValueError(f"unknown view scope {scope!r}")
    return {SCOPE_OPT: scope, BOUND_OPT: bound, PERSONAL_OPT: personal}


def check_route(grant: Grant, opt: dict[str, Any], path_params: dict[str, Any]) -> None:
    """Whether ``grant`` may call a route with this ``opt``; ViewForbiddenError otherwise."""
    scope = opt.get(SCOPE_OPT)
    if scope is None:
        raise ViewForbiddenError("this operation takes an API key, not a view token")
    if not grant.allows(scope):
        raise ViewForbiddenError(f"this view token lacks the scope {scope}")
    if opt.get(PERSONAL_OPT) and not grant.personal:
        raise ViewForbiddenError("this view token may not read personal data")
    for param, field in opt.get(BOUND_OPT, {}).items():
        value = getattr(grant, field)
        if value and str(path_params.get(param)) != value:
            raise ViewForbiddenError(f"this view token is for another {field}")


def check_dispatch(grant: Grant | None, *, room: str, role: str) -> None:
    """Whether the caller may dispatch an agent of ``role`` into ``room`` (API keys may)."""
    if grant is None:
        return
    if grant.room and room != grant.room:
        raise ViewForbiddenError("this view token may dispatch only into its own room")
    if grant.agent_roles and role not in grant.agent_roles:
        raise ViewForbiddenError(
            f"this view token may dispatch only: {', '.join(grant.agent_roles)}"
        )


def may_read_personal(grant: Grant | None) -> bool:
    """API keys read personal parts; a view token only when it says so."""
    return grant is None or grant.personal
