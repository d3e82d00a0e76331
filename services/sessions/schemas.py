"""What the sessions service answers: sessions, and timeline entries."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

import asyncpg
import msgspec


class DispatchSummary(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    id: str
    room: str
    role: str
    # requested | dispatched | joined | ended | failed
    state: str
    patient_ref: str
    agent_identity: str
    requested_at: datetime | None
    ended_at: datetime | None

    @classmethod
    def of(cls, row: asyncpg.Record) -> DispatchSummary:
        return cls(
            id=row["dispatch_id"],
            room=row["room"],
            role=row["role"],
            state=row["state"] or "requested",
            patient_ref=row["patient_ref"],
            agent_identity=row["agent_identity"],
            requested_at=row["requested_at"],
            ended_at=row["ended_at"],
        )


class SessionSummary(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A session: a LiveKit room session (``kind`` ``room``, ``id`` its room SID) or a
    consultation whose agent never reached a room (``kind`` ``consultation``, ``id`` the
    dispatch id). ``live``: still going."""

    id: str
    kind: Literal["room", "consultation"]
    room: str
    room_sid: str
    started_at: datetime | None
    finished_at: datetime | None
    live: bool
    dispatches: list[DispatchSummary]


class SessionList(msgspec.Struct, frozen=True, kw_only=True):
    sessions: list[SessionSummary]


class TimelineEntry(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """One line of a timeline. ``key`` is stable: an entry completed later (a hint's text)
    comes again with a higher ``seq`` and the same key. ``data`` is what the entry's ``kind``
    says (docs/console.md); ``personal`` (what was said, hint texts, red flags, instructions,
    names) is null for callers not allowed to read personal data. ``traceUrl`` opens the trace
    of the step in the tracing UI (``MEDIAI_TRACE_URL_TEMPLATE``; the local Zipkin by default), null when none is configured."""

    key: str
    seq: int
    kind: str
    at: datetime
    room_sid: str
    dispatch_id: str
    trace_id: str
    trace_url: str | None
    data: dict[str, Any]
    personal: dict[str, Any] | None

    @classmethod
    def of(
        cls,
        row: asyncpg.Record,
        *,
        personal: dict[str, Any] | None,
        trace_url: Callable[[str], str],
    ) -> TimelineEntry:
        """The entry of a row, with its personal parts as opened for this caller (None: none
        for this caller, or none at all)."""
        trace = row["trace_id"]
        return cls(
            key=row["key"],
            seq=row["seq"],
            kind=row["kind"],
            at=row["at"],
            room_sid=row["room_sid"],
            dispatch_id=row["dispatch_id"],
            trace_id=trace,
            trace_url=(trace_url(trace) or None) if trace else None,
            data=row["data"],
            personal=personal,
        )


class Timeline(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A page of a session's timeline in the order it was written (sort by ``at`` to read it).
    ``cursor``: pass it as ``after`` for the next page, or to the stream; ``more``: another
    page is ready now. ``personal``: whether personal parts were included."""

    session: SessionSummary
    entries: list[TimelineEntry]
    cursor: int
    more: bool
    personal: bool
