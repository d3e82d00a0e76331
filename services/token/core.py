"""The token service's decisions, free of I/O: what a requested token may be."""

from __future__ import annotations

from datetime import timedelta

from shared.config import parse_duration
from shared.participants import PERSON_ROLES


class TokenRequestError(ValueError):
    """The requested token is not allowed; the message says why."""


def person_role(requested: str) -> str:
    """The role the token gives the person; only the clinic chooses it, in the request."""
    if requested not in PERSON_ROLES:
        raise TokenRequestError(f"role must be one of: {', '.join(PERSON_ROLES)}")
    return requested


def token_ttl(requested: str | None, *, default: int, maximum: int) -> timedelta:
    """The token's lifetime: the requested one (e.g. ``"2h"``) or the default, never above
    the maximum."""
    if requested is None:
        return timedelta(seconds=default)
    try:
        seconds = parse_duration(requested)
    except ValueError as error:
        raise TokenRequestError(str(error)) from None
    if seconds < 60:
        raise TokenRequestError("ttl must be at least 60s")
    if seconds > maximum:
        raise TokenRequestError(f"ttl {requested} is above the maximum of {maximum}s")
    return timedelta(seconds=seconds)
