"""The read model's rules for egress and ingress rows, free of I/O (see ``core`` for rooms)."""

from __future__ import annotations

from datetime import datetime

import msgspec
from msgspec.structs import replace

from shared.events.recordings import RecordingStored
from shared.events.rooms import (
    EgressEnded,
    EgressRequested,
    EgressStarted,
    EgressStopRequested,
    EgressUpdated,
    IngressCreated,
    IngressDeleted,
    IngressEnded,
    IngressStarted,
)

# Egress statuses in the order they happen; the four terminal ones share the last rank.
_EGRESS_RANK = {
    "starting": 0,
    "active": 1,
    "ending": 2,
    "complete": 3,
    "failed": 3,
    "aborted": 3,
    "limit_reached": 3,
}


class EgressRow(msgspec.Struct, frozen=True, kw_only=True):
    egress_id: str
    tenant: str
    room: str
    room_sid: str = ""
    kind: str = ""
    outputs: list[str] = msgspec.field(default_factory=list)
    status: str = "starting"
    requested_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str = ""
    # "livekit" or "recorder" (MediAI's recorder); what the recorder kept, once it kept it.
    backend: str = "livekit"
    dispatch_id: str = ""
    patient_ref: str = ""
    file: str = ""
    file_size: int = 0
    duration_ms: int = 0
    retain_until: datetime | None = None


class IngressRow(msgspec.Struct, frozen=True, kw_only=True):
    ingress_id: str
    tenant: str
    room: str
    input_type: str = ""
    name: str = ""
    participant_identity: str = ""
    url: str = ""
    status: str = "inactive"
    state_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    error: str = ""
    created_at: datetime | None = None
    deleted_at: datetime | None = None


def egress_status(row: EgressRow, status: str) -> EgressRow:
    """Move to ``status`` if it comes later; the first terminal status is final."""
    if _EGRESS_RANK.get(status, -1) <= _EGRESS_RANK.get(row.status, -1):
        return row
    return replace(row, status=status)


def egress_requested(row: EgressRow | None, requested: EgressRow) -> EgressRow:
    """LiveKit accepted our start request; its webhooks may already have moved the row on."""
    if row is None:
        return requested
    return egress_status(
        replace(
            row,
            requested_at=requested.requested_at,
            outputs=requested.outputs,
            kind=row.kind or requested.kind,
            room_sid=row.room_sid or requested.room_sid,
            backend=requested.backend,
        ),
        requested.status,
    )


def on_egress_requested(
    row: EgressRow | None, event: EgressRequested, tenant: str, at: datetime
) -> EgressRow:
    """Our API started the egress at ``at`` (the event's time)."""
    requested = EgressRow(
        egress_id=event.egress_id,
        tenant=tenant,
        room=event.room,
        room_sid=event.room_sid,
        kind=event.kind,
        outputs=event.outputs,
        status=event.status or "starting",
        requested_at=at,
        backend=event.backend,
    )
    return egress_requested(row, requested)


def on_recording_stored(row: EgressRow | None, event: RecordingStored, tenant: str) -> EgressRow:
    """The recorder kept the file: it is listed with its egress and its consultation."""
    base = row or EgressRow(egress_id=event.egress_id, tenant=tenant, room=event.room)
    return replace(
        base,
        backend="recorder",
        dispatch_id=event.dispatch_id,
        patient_ref=event.patient_ref,
        file=event.file,
        file_size=event.size_bytes,
        duration_ms=event.duration_ms,
        retain_until=event.retain_until,
    )


def on_egress_stop_requested(
    row: EgressRow | None, event: EgressStopRequested, tenant: str
) -> EgressRow:
    base = row or EgressRow(egress_id=event.egress_id, tenant=tenant, room=event.room)
    return egress_status(base, event.status) if event.status else base


def on_egress_event(
    row: EgressRow | None, event: EgressStarted | EgressUpdated | EgressEnded, tenant: str
) -> EgressRow:
    base = row or EgressRow(egress_id=event.egress_id, tenant=tenant, room=event.room)
    base = replace(base, room_sid=base.room_sid or event.room_sid, kind=base.kind or event.kind)
    if isinstance(event, EgressStarted):
        base = replace(base, started_at=base.started_at or event.started_at)
        return egress_status(base, event.status or "starting")
    if isinstance(event, EgressUpdated):
        return egress_status(replace(base, error=event.error or base.error), event.status)
    base = replace(
        base,
        started_at=base.started_at or event.started_at,
        ended_at=base.ended_at or event.ended_at,
        error=event.error or base.error,
    )
    return egress_status(base, event.status or "complete")


def on_ingress_event(
    row: IngressRow | None, event: IngressStarted | IngressEnded, tenant: str
) -> IngressRow:
    """An ingress starts and ends once per stream pushed to it: the latest state wins."""
    base = row or IngressRow(ingress_id=event.ingress_id, tenant=tenant, room=event.room)
    base = replace(
        base,
        input_type=base.input_type or event.input_type,
        participant_identity=base.participant_identity or event.participant_identity,
    )
    at = event.started_at if isinstance(event, IngressStarted) else event.ended_at
    if base.state_at is not None and at < base.state_at:
        return base
    if isinstance(event, IngressStarted):
        return replace(
            base,
            status=event.status or "publishing",
            started_at=at,
            ended_at=None,
            error="",
            state_at=at,
        )
    return replace(
        base,
        status=event.status or "complete",
        ended_at=at,
        started_at=base.started_at or event.started_at,
        error=event.error,
        state_at=at,
    )


def on_ingress_created(
    row: IngressRow | None, event: IngressCreated, tenant: str, at: datetime
) -> IngressRow:
    """Our API created the ingress at ``at``; its webhooks may have made the row already."""
    if row is None:
        return IngressRow(
            ingress_id=event.ingress_id,
            tenant=tenant,
            room=event.room,
            input_type=event.input_type,
            name=event.name,
            participant_identity=event.participant_identity,
            url=event.url,
            created_at=at,
        )
    return replace(
        row,
        url=event.url,
        name=event.name,
        created_at=at,
        input_type=row.input_type or event.input_type,
        participant_identity=row.participant_identity or event.participant_identity,
    )


def on_ingress_deleted(
    row: IngressRow | None, event: IngressDeleted, tenant: str, at: datetime
) -> IngressRow:
    base = row or IngressRow(ingress_id=event.ingress_id, tenant=tenant, room=event.room)
    return base if base.deleted_at is not None else replace(base, deleted_at=at)
