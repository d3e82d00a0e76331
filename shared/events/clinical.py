"""Events of the medical roles: consent, anamnesis records, copilot hints, scheduling."""

from __future__ import annotations

from shared.events.base import Event

EVENTS: tuple[type[Event], ...] = ()
