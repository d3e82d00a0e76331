"""The read model's rules for track rows, free of I/O (rooms and participants: ``core``).

A track is published once and unpublished once (a republished track gets a new sid); the
webhook's unpublish outranks a presumption's, whichever comes first. Whether a track is muted
changes back and forth, from several sources (the publish, our API, a listing), so each change
carries the time it was true and the newest wins: any order of the same events gives one row.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from msgspec.structs import replace

from services.rooms.core import RECONCILE, WEBHOOK, earliest, outranks
from shared.events.reconciliation import TrackFound, TrackPresumedUnpublished
from shared.events.rooms import TrackMuted, TrackPublished, TrackUnpublished


class TrackRow(msgspec.Struct, frozen=True, kw_only=True):
    sid: str
    participant_sid: str
    room_sid: str
    tenant: str
    type: str = ""
    source: str = "unknown"
    name: str = ""
    mime_type: str = ""
    muted: bool = False
    # When ``muted`` was last known true (the publish, our API call, a listing).
    muted_at: datetime | None = None
    published_at: datetime | None = None
    unpublished_at: datetime | None = None
    # What set unpublished_at: "webhook" or "reconcile" (a presumption).
    unpublished_by: str = ""
    updated_at: datetime | None = None


def mute(row: TrackRow, *, muted: bool, at: datetime | None) -> TrackRow:
    """Take ``muted`` as of ``at`` unless the row knows a newer state (at the same instant,
    muted wins, so the order of two such facts does not matter)."""
    known = row.muted_at
    if at is None and known is not None:
        return row
    if at is not None and known is not None and (at, muted) < (known, row.muted):
        return row
    return replace(row, muted=muted, muted_at=at)


def track_seen(row: TrackRow | None, seen: TrackRow, *, listed: bool = False) -> TrackRow:
    """LiveKit showed the track published (a ``track_published``, a listing). Only a listing,
    which shows it alive now, undoes a presumption that it was unpublished."""
    if row is None:
        return seen
    merged = replace(
        row,
        participant_sid=row.participant_sid or seen.participant_sid,
        room_sid=row.room_sid or seen.room_sid,
        type=seen.type or row.type,
        source=seen.source if seen.source != "unknown" else row.source,
        name=row.name or seen.name,
        mime_type=seen.mime_type or row.mime_type,
        published_at=earliest(row.published_at, seen.published_at),
    )
    merged = mute(merged, muted=seen.muted, at=seen.muted_at)
    if listed and merged.unpublished_at is not None and merged.unpublished_by == RECONCILE:
        return replace(merged, unpublished_at=None, unpublished_by="")
    return merged


def unpublish(row: TrackRow, *, at: datetime, by: str) -> TrackRow:
    """Mark a track unpublished, unless a source at least as authoritative already did."""
    if row.unpublished_at is not None and not outranks(by, row.unpublished_by):
        return row
    return replace(row, unpublished_at=at, unpublished_by=by)


def on_track_published(
    row: TrackRow | None, event: TrackPublished, tenant: str, room_sid: str
) -> TrackRow:
    seen = TrackRow(
        sid=event.track_sid,
        participant_sid=event.participant_sid,
        room_sid=room_sid,
        tenant=tenant,
        type=event.track_type,
        source=event.source,
        name=event.name,
        mime_type=event.mime_type,
        muted=event.muted,
        muted_at=event.published_at,
        published_at=event.published_at,
    )
    return track_seen(row, seen)


def on_track_found(row: TrackRow | None, event: TrackFound, tenant: str) -> TrackRow:
    seen = TrackRow(
        sid=event.track_sid,
        participant_sid=event.participant_sid,
        room_sid=event.room_sid,
        tenant=tenant,
        type=event.track_type,
        source=event.source,
        name=event.name,
        mime_type=event.mime_type,
        muted=event.muted,
        muted_at=event.observed_at,
    )
    return track_seen(row, seen, listed=True)


def _base(
    row: TrackRow | None,
    *,
    sid: str,
    participant_sid: str,
    room_sid: str,
    tenant: str,
) -> TrackRow:
    return row or TrackRow(
        sid=sid, participant_sid=participant_sid, room_sid=room_sid, tenant=tenant
    )


def on_track_unpublished(
    row: TrackRow | None, event: TrackUnpublished, tenant: str, room_sid: str
) -> TrackRow:
    base = row or TrackRow(
        sid=event.track_sid,
        participant_sid=event.participant_sid,
        room_sid=room_sid,
        tenant=tenant,
        type=event.track_type,
        source=event.source,
    )
    return unpublish(base, at=event.unpublished_at, by=WEBHOOK)


def on_track_presumed_unpublished(
    row: TrackRow | None, event: TrackPresumedUnpublished, tenant: str
) -> TrackRow:
    base = _base(
        row,
        sid=event.track_sid,
        participant_sid=event.participant_sid,
        room_sid=event.room_sid,
        tenant=tenant,
    )
    return unpublish(base, at=event.last_seen_at, by=RECONCILE)


def on_track_muted(
    row: TrackRow | None, event: TrackMuted, tenant: str, room_sid: str, at: datetime
) -> TrackRow:
    """Our API muted or unmuted the track at ``at`` (the event's time). A track not known yet
    (its publish is late) is started with it; the publish, older, then fills only the rest."""
    base = _base(
        row,
        sid=event.track_sid,
        participant_sid=event.participant_sid,
        room_sid=room_sid,
        tenant=tenant,
    )
    return mute(base, muted=event.muted, at=at)
