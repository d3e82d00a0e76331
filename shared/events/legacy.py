"""Old versions of events, kept readable forever: billing audits replay years-old streams.

Each entry is ``(old struct, old type, upcaster)``; the upcaster turns the old data into the
current event (or into a newer legacy one, which is upcast again). The old struct is a plain
``msgspec.Struct`` frozen at the fields that version had; golden files of every version live in
``tests/golden/events/``.
"""

from __future__ import annotations

from shared.events.codec import Upcaster

LEGACY: tuple[tuple[type, str, Upcaster], ...] = ()
