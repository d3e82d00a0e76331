"""What a verified LiveKit webhook means as events: a pure translation, no I/O, no clock."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.protobuf.json_format import MessageToDict
from livekit.protocol import egress as lk_egress
from livekit.protocol import ingress as lk_ingress
from livekit.protocol import models as lk_models
from livekit.protocol.webhook import WebhookEvent

from shared.events import Event
from shared.events.rooms import (
    EgressEnded,
    EgressStarted,
    EgressUpdated,
    IngressEnded,
    IngressStarted,
    LiveKitWebhookReceived,
    ParticipantJoined,
    ParticipantLeft,
    RoomFinished,
    RoomStarted,
    TrackPublished,
    TrackUnpublished,
    WebhooksDropped,
)
from shared.livekit_proto import enum_name, from_unix
from shared.naming import SYSTEM_TENANT, tenant_room
from shared.participants import patient_ref_of

# Rooms that are not a tenant's (made outside MediAI on the same LiveKit server) are recorded
# under this tenant rather than dropped; it can never be a tenant id (those are t + 10 chars).
# The subject key of events that concern no room (e.g. a report of dropped webhooks).
NO_ROOM_KEY = "livekit"
# Keys never copied into an event: LiveKit puts the room's TURN password in room objects.
_SECRET_KEYS = frozenset({"turnPassword", "turn_password"})


@dataclass(frozen=True)
class Publication:
    """One event to publish for a webhook: its data, tenant, subject key, id and time."""

    data: Event
    tenant: str
    key: str
    event_id: str
    time: datetime


def webhook_id(hook: WebhookEvent, body: bytes) -> str:
    """The dedup key: LiveKit's webhook id, or (from servers that send none) the body's hash,
    which a retry repeats byte for byte."""
    return hook.id or "lkwh-" + hashlib.sha256(body).hexdigest()[:32]


def participant_kind(info: lk_models.ParticipantInfo) -> str:
    return enum_name(lk_models.ParticipantInfo.Kind, info.kind)


def _participant_joined_at(info: lk_models.ParticipantInfo) -> datetime | None:
    return from_unix(info.joined_at_ms) or from_unix(info.joined_at)


def _egress_kind(info: lk_egress.EgressInfo) -> str:
    return info.WhichOneof("request") or ""


def _egress_status(info: lk_egress.EgressInfo) -> str:
    return enum_name(lk_egress.EgressStatus, info.status, "EGRESS_")


def _ingress_status(info: lk_ingress.IngressInfo) -> str:
    return enum_name(lk_ingress.IngressState.Status, info.state.status, "ENDPOINT_")


def _ingress_input(info: lk_ingress.IngressInfo) -> str:
    return enum_name(lk_ingress.IngressInput, info.input_type).removesuffix("_input")


def _without_secrets(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_secrets(v) for k, v in value.items() if k not in _SECRET_KEYS}
    if isinstance(value, list):
        return [_without_secrets(v) for v in value]
    return value


def _room_name(hook: WebhookEvent) -> str:
    if hook.room.name:
        return hook.room.name
    if hook.HasField("egress_info") and hook.egress_info.room_name:
        return hook.egress_info.room_name
    if hook.HasField("ingress_info") and hook.ingress_info.room_name:
        return hook.ingress_info.room_name
    return ""


def _event(hook: WebhookEvent, room: str, at: datetime) -> Event:
    """The event of one webhook (``room`` is the tenant's room name)."""
    kind = hook.event
    if kind == "room_started":
        return RoomStarted(
            room=room,
            room_sid=hook.room.sid,
            started_at=from_unix(hook.room.creation_time_ms)
            or from_unix(hook.room.creation_time)
            or at,
            empty_timeout=hook.room.empty_timeout,
            departure_timeout=hook.room.departure_timeout,
            max_participants=hook.room.max_participants,
            metadata=hook.room.metadata,
        )
    if kind == "room_finished":
        return RoomFinished(
            room=room,
            room_sid=hook.room.sid,
            started_at=from_unix(hook.room.creation_time_ms) or from_unix(hook.room.creation_time),
            finished_at=at,
            end_reason=enum_name(lk_models.RoomEndReason, hook.room_end_reason, "ROOM_END_")
            if hook.room_end_reason
            else "",
        )
    participant = hook.participant
    if kind == "participant_joined":
        return ParticipantJoined(
            room=room,
            room_sid=hook.room.sid,
            participant_sid=participant.sid,
            identity=participant.identity,
            kind=participant_kind(participant),
            joined_at=_participant_joined_at(participant) or at,
            name=participant.name,
            metadata=participant.metadata,
            patient_ref=patient_ref_of(participant.attributes),
        )
    if kind in ("participant_left", "participant_connection_aborted"):
        joined_at = _participant_joined_at(participant)
        return ParticipantLeft(
            room=room,
            room_sid=hook.room.sid,
            participant_sid=participant.sid,
            identity=participant.identity,
            kind=participant_kind(participant),
            # The webhook's whole-second stamp can fall before a sub-second join.
            left_at=max(at, joined_at) if joined_at else at,
            joined_at=joined_at,
            aborted=kind == "participant_connection_aborted",
            disconnect_reason=enum_name(lk_models.DisconnectReason, participant.disconnect_reason)
            if participant.disconnect_reason
            else "",
        )
    track = hook.track
    if kind == "track_published":
        return TrackPublished(
            room=room,
            room_sid=hook.room.sid,
            participant_sid=participant.sid,
            identity=participant.identity,
            track_sid=track.sid,
            track_type=enum_name(lk_models.TrackType, track.type),
            source=enum_name(lk_models.TrackSource, track.source),
            name=track.name,
            mime_type=track.mime_type,
            muted=track.muted,
            published_at=at,
        )
    if kind == "track_unpublished":
        return TrackUnpublished(
            room=room,
            room_sid=hook.room.sid,
            participant_sid=participant.sid,
            identity=participant.identity,
            track_sid=track.sid,
            track_type=enum_name(lk_models.TrackType, track.type),
            source=enum_name(lk_models.TrackSource, track.source),
            unpublished_at=at,
        )
    egress = hook.egress_info
    if kind == "egress_started":
        return EgressStarted(
            room=room,
            room_sid=egress.room_id,
            egress_id=egress.egress_id,
            started_at=from_unix(egress.started_at) or at,
            kind=_egress_kind(egress),
            status=_egress_status(egress),
        )
    if kind == "egress_updated":
        return EgressUpdated(
            room=room,
            room_sid=egress.room_id,
            egress_id=egress.egress_id,
            kind=_egress_kind(egress),
            status=_egress_status(egress),
            updated_at=from_unix(egress.updated_at) or at,
            error=egress.error,
        )
    if kind == "egress_ended":
        return EgressEnded(
            room=room,
            room_sid=egress.room_id,
            egress_id=egress.egress_id,
            started_at=from_unix(egress.started_at),
            ended_at=from_unix(egress.ended_at) or at,
            status=_egress_status(egress),
            kind=_egress_kind(egress),
            error=egress.error,
        )
    ingress = hook.ingress_info
    if kind == "ingress_started":
        return IngressStarted(
            room=room,
            ingress_id=ingress.ingress_id,
            input_type=_ingress_input(ingress),
            participant_identity=ingress.participant_identity,
            status=_ingress_status(ingress),
            started_at=from_unix(ingress.state.started_at) or at,
        )
    if kind == "ingress_ended":
        return IngressEnded(
            room=room,
            ingress_id=ingress.ingress_id,
            input_type=_ingress_input(ingress),
            participant_identity=ingress.participant_identity,
            status=_ingress_status(ingress),
            started_at=from_unix(ingress.state.started_at),
            ended_at=from_unix(ingress.state.ended_at) or at,
            error=ingress.state.error,
        )
    return LiveKitWebhookReceived(
        webhook_event=kind,
        room=room,
        room_sid=hook.room.sid,
        occurred_at=at,
        payload=_without_secrets(MessageToDict(hook)),
    )


def translate(hook: WebhookEvent, *, body: bytes, received_at: datetime) -> list[Publication]:
    """The events of one verified webhook, in publishing order.

    ``received_at`` stands in for LiveKit's stamp only when the webhook has none.
    """
    event_id = webhook_id(hook, body)
    at = from_unix(hook.created_at) or received_at
    livekit_name = _room_name(hook)
    tenant, room = tenant_room(livekit_name) if livekit_name else (SYSTEM_TENANT, "")
    publications = [
        Publication(
            data=_event(hook, room, at),
            tenant=tenant,
            key=room or NO_ROOM_KEY,
            event_id=event_id,
            time=at,
        )
    ]
    if hook.num_dropped > 0:
        publications.append(
            Publication(
                data=WebhooksDropped(
                    num_dropped=hook.num_dropped,
                    webhook_event=hook.event,
                    webhook_id=event_id,
                    reported_at=at,
                ),
                tenant=SYSTEM_TENANT,
                key=NO_ROOM_KEY,
                event_id=f"{event_id}-dropped",
                time=at,
            )
        )
    return publications
