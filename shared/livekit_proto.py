"""Reading LiveKit's protocol values (timestamps, enum names), the same way in every service."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def from_unix(value: int) -> datetime | None:
    """A LiveKit timestamp as a datetime; LiveKit mixes seconds, ms and ns, so go by size."""
    if value <= 0:
        return None
    for limit, scale in ((10**17, 1e9), (10**14, 1e6), (10**11, 1e3)):
        if value >= limit:
            return datetime.fromtimestamp(value / scale, UTC)
    return datetime.fromtimestamp(value, UTC)


def enum_name(enum: Any, value: int, prefix: str = "") -> str:
    """A protobuf enum value's name, lower-case without ``prefix`` (its number if unknown)."""
    try:
        name: str = enum.Name(value)
    except ValueError:
        return str(value)
    return name.removeprefix(prefix).lower()
