"""Events of rooms, participants, tracks, egress and ingress, and the LiveKit webhook edge.

The webhook events carry the tenant's room name (not LiveKit's ``<tenant>~<room>``) and the
time LiveKit stamped on the webhook, so projections are deterministic under replay. A room that
is not a tenant's (no ``<tenant>~`` prefix) is still recorded, under the tenant ``system``, with
LiveKit's whole name as ``room``. Webhook events use LiveKit's webhook id as their event id, so a
webhook LiveKit delivers twice is one event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar

import msgspec

from shared.events.base import Event
from shared.events.privacy import PERSONAL, Personal, Plain, Pseudonym

# ---------------------------------------------------------------------------------------------
# From LiveKit's webhooks (producer: webhooks)


class RoomStarted(Event, frozen=True, kw_only=True):
    """A LiveKit room started (``room_started``): created through the API or by a first join."""

    TYPE: ClassVar[str] = "mediai.room.started.v1"
    PRODUCER: ClassVar[str] = "webhooks"
    room: Pseudonym
    room_sid: Plain
    # LiveKit's time the room was created (millisecond precision where LiveKit gives it).
    started_at: datetime
    empty_timeout: int = 0
    departure_timeout: int = 0
    max_participants: int = 0
    metadata: Personal = ""


class RoomFinished(Event, frozen=True, kw_only=True):
    """A LiveKit room ended (``room_finished``): deleted, idle, or the server shut down."""

    TYPE: ClassVar[str] = "mediai.room.finished.v1"
    PRODUCER: ClassVar[str] = "webhooks"
    room: Pseudonym
    room_sid: Plain
    started_at: datetime | None = None
    finished_at: datetime
    # LiveKit's RoomEndReason without its prefix: "api_delete", "idle_timeout", "unknown", ...
    end_reason: Plain = ""


class ParticipantJoined(Event, frozen=True, kw_only=True):
    """A participant joined a LiveKit room (from LiveKit's ``participant_joined`` webhook).

    ``patient_ref`` is the patient the participant is, from the ``mediai.patient_ref`` attribute
    the clinic had signed into its token (``POST /v1/tokens``): whose personal data ``name``
    and ``metadata`` are. "" for anyone else, or an attribute that is not a patient reference.
    """

    TYPE: ClassVar[str] = "mediai.participant.joined.v1"
    PRODUCER: ClassVar[str] = "webhooks"
    room: Pseudonym
    participant_sid: Plain
    identity: Pseudonym
    # "standard", "agent", "egress", "ingress", "sip" (LiveKit's ParticipantInfo.Kind)
    kind: Plain = "standard"
    joined_at: datetime
    room_sid: Plain = ""
    name: Personal = ""
    metadata: Personal = ""
    patient_ref: Pseudonym = ""


class ParticipantLeft(Event, frozen=True, kw_only=True):
    """A participant left a LiveKit room (``participant_left`` or ``participant_connection_aborted``)."""

    TYPE: ClassVar[str] = "mediai.participant.left.v1"
    PRODUCER: ClassVar[str] = "webhooks"
    room: Pseudonym
    participant_sid: Plain
    identity: Pseudonym
    kind: Plain = "standard"
    # LiveKit stamps webhooks in whole seconds; never earlier than ``joined_at``.
    left_at: datetime
    aborted: bool = False
    room_sid: Plain = ""
    joined_at: datetime | None = None
    # LiveKit's DisconnectReason, lower case: "client_initiated", "participant_removed", ...
    disconnect_reason: Plain = ""


class TrackPublished(Event, frozen=True, kw_only=True):
    """A participant published a track (``track_published``)."""

    TYPE: ClassVar[str] = "mediai.track.published.v1"
    PRODUCER: ClassVar[str] = "webhooks"
    room: Pseudonym
    room_sid: Plain = ""
    participant_sid: Plain
    identity: Pseudonym
    track_sid: Plain
    track_type: Plain  # "audio" | "video" | "data"
    source: Plain = "unknown"  # "camera" | "microphone" | "screen_share" | "screen_share_audio"
    name: Personal = ""
    mime_type: Plain = ""
    muted: bool = False
    published_at: datetime


class TrackUnpublished(Event, frozen=True, kw_only=True):
    """A participant's track was unpublished (``track_unpublished``), or went with its owner."""

    TYPE: ClassVar[str] = "mediai.track.unpublished.v1"
    PRODUCER: ClassVar[str] = "webhooks"
    room: Pseudonym
    room_sid: Plain = ""
    participant_sid: Plain
    identity: Pseudonym
    track_sid: Plain
    track_type: Plain
    source: Plain = "unknown"
    unpublished_at: datetime


class EgressStarted(Event, frozen=True, kw_only=True):
    """LiveKit started an egress (recording or stream) of a room."""

    TYPE: ClassVar[str] = "mediai.egress.started.v1"
    PRODUCER: ClassVar[str] = "webhooks"
    room: Pseudonym
    egress_id: Plain
    started_at: datetime
    room_sid: Plain = ""
    # "room_composite", "web", "participant", "track_composite", "track"
    kind: Plain = ""
    status: Plain = ""


class EgressUpdated(Event, frozen=True, kw_only=True):
    """An egress changed status (``egress_updated``: e.g. starting -> active -> ending)."""

    TYPE: ClassVar[str] = "mediai.egress.updated.v1"
    PRODUCER: ClassVar[str] = "webhooks"
    room: Pseudonym
    egress_id: Plain
    room_sid: Plain = ""
    kind: Plain = ""
    # LiveKit's EgressStatus without "EGRESS_": "starting", "active", "ending", "complete", ...
    status: Plain
    updated_at: datetime
    error: Plain = ""


class EgressEnded(Event, frozen=True, kw_only=True):
    """An egress ended (completed, failed or aborted)."""

    TYPE: ClassVar[str] = "mediai.egress.ended.v1"
    PRODUCER: ClassVar[str] = "webhooks"
    room: Pseudonym
    egress_id: Plain
    started_at: datetime | None = None
    ended_at: datetime
    # "complete", "failed", "aborted", "limit_reached"
    status: Plain
    room_sid: Plain = ""
    kind: Plain = ""
    error: Plain = ""


class IngressStarted(Event, frozen=True, kw_only=True):
    """An ingress began receiving media and publishing it into its room (``ingress_started``)."""

    TYPE: ClassVar[str] = "mediai.ingress.started.v1"
    PRODUCER: ClassVar[str] = "webhooks"
    room: Pseudonym
    ingress_id: Plain
    input_type: Plain  # "rtmp" | "whip" | "url"
    participant_identity: Pseudonym = ""
    # LiveKit's IngressState.Status without "ENDPOINT_": "buffering", "publishing", ...
    status: Plain = ""
    started_at: datetime


class IngressEnded(Event, frozen=True, kw_only=True):
    """An ingress stopped receiving media (``ingress_ended``); it can start again later."""

    TYPE: ClassVar[str] = "mediai.ingress.ended.v1"
    PRODUCER: ClassVar[str] = "webhooks"
    room: Pseudonym
    ingress_id: Plain
    input_type: Plain
    participant_identity: Pseudonym = ""
    status: Plain = ""
    started_at: datetime | None = None
    ended_at: datetime
    error: Plain = ""


class LiveKitWebhookReceived(Event, frozen=True, kw_only=True):
    """A verified LiveKit webhook of a type MediAI has no dedicated event for: kept, not dropped.

    ``payload`` is LiveKit's webhook document as sent (JSON, camelCase), minus credentials
    (``turnPassword``), so a consumer written later can still read it.
    """

    TYPE: ClassVar[str] = "mediai.livekit.webhook_received.v1"
    PRODUCER: ClassVar[str] = "webhooks"
    webhook_event: Plain
    room: Pseudonym = ""
    room_sid: Plain = ""
    occurred_at: datetime
    payload: Annotated[dict[str, Any], PERSONAL] = msgspec.field(default_factory=dict)


class WebhooksDropped(Event, frozen=True, kw_only=True):
    """LiveKit reported that it dropped webhooks (its queue was full) before this one.

    The events of those webhooks are missing from the log; the rooms service's reconciliation
    heals the read model, and an operator may want to check usage around ``reported_at``.
    """

    TYPE: ClassVar[str] = "mediai.livekit.webhooks_dropped.v1"
    PRODUCER: ClassVar[str] = "webhooks"
    num_dropped: int
    # The webhook that carried the report (its type and id).
    webhook_event: Plain
    webhook_id: Plain
    reported_at: datetime


# ---------------------------------------------------------------------------------------------
# Actions of the rooms service (producer: rooms); the rooms read model folds those that change it


class RoomCreated(Event, frozen=True, kw_only=True):
    """A tenant created a room through ``POST /v1/rooms``."""

    TYPE: ClassVar[str] = "mediai.room.created.v1"
    PRODUCER: ClassVar[str] = "rooms"
    room: Pseudonym
    room_sid: Plain
    empty_timeout: int = 0
    departure_timeout: int = 0
    max_participants: int = 0
    metadata: Personal = ""
    # LiveKit's creation time of the room (absent in events from before it was recorded).
    created_at: datetime | None = None


class RoomDeleted(Event, frozen=True, kw_only=True):
    """A tenant deleted a room through ``DELETE /v1/rooms/{name}`` (everyone is disconnected)."""

    TYPE: ClassVar[str] = "mediai.room.deleted.v1"
    PRODUCER: ClassVar[str] = "rooms"
    room: Pseudonym
    room_sid: Plain = ""


class ParticipantRemoved(Event, frozen=True, kw_only=True):
    """A tenant removed a participant from a room (the participant is disconnected)."""

    TYPE: ClassVar[str] = "mediai.participant.removed.v1"
    PRODUCER: ClassVar[str] = "rooms"
    room: Pseudonym
    identity: Pseudonym
    participant_sid: Plain = ""


class ParticipantPermission(msgspec.Struct, frozen=True, kw_only=True):
    """What a participant may do in its room (a subset of LiveKit's ParticipantPermission)."""

    can_subscribe: bool
    can_publish: bool
    can_publish_data: bool
    hidden: bool = False
    # Track sources it may publish ("camera", "microphone", ...); empty = any.
    can_publish_sources: list[Plain] = msgspec.field(default_factory=list)


class ParticipantUpdated(Event, frozen=True, kw_only=True):
    """A tenant changed a participant's name, metadata, attributes or permissions.

    Only the parts that were changed are set; ``None`` means unchanged.
    """

    TYPE: ClassVar[str] = "mediai.participant.updated.v1"
    PRODUCER: ClassVar[str] = "rooms"
    room: Pseudonym
    identity: Pseudonym
    participant_sid: Plain = ""
    name: Personal | None = None
    metadata: Personal | None = None
    attributes: Annotated[dict[str, str], PERSONAL] | None = None
    permission: ParticipantPermission | None = None


class TrackMuted(Event, frozen=True, kw_only=True):
    """A tenant muted or unmuted a participant's published track; ``muted`` is the track's state
    as LiveKit answered (LiveKit may refuse to unmute a track remotely)."""

    TYPE: ClassVar[str] = "mediai.track.muted.v1"
    PRODUCER: ClassVar[str] = "rooms"
    room: Pseudonym
    identity: Pseudonym
    track_sid: Plain
    muted: bool
    participant_sid: Plain = ""


class DataMessageSent(Event, frozen=True, kw_only=True):
    """A data message was sent into a room (to everyone, or to ``destination_identities``).

    The payload itself is not recorded: it may carry clinical content.
    """

    TYPE: ClassVar[str] = "mediai.room.data_sent.v1"
    PRODUCER: ClassVar[str] = "rooms"
    room: Pseudonym
    topic: Plain = ""
    destination_identities: list[Pseudonym] = msgspec.field(default_factory=list)
    reliable: bool = True
    size_bytes: int


class EgressRequested(Event, frozen=True, kw_only=True):
    """A tenant started an egress: LiveKit accepted it; ``mediai.egress.started`` follows."""

    TYPE: ClassVar[str] = "mediai.egress.requested.v1"
    PRODUCER: ClassVar[str] = "rooms"
    room: Pseudonym
    egress_id: Plain
    kind: Plain  # "room_composite" | "track"
    # What it writes: "mp4", "ogg", "hls", "rtmp" (one entry per output).
    outputs: list[Plain] = msgspec.field(default_factory=list)
    track_sid: Plain = ""
    room_sid: Plain = ""
    # LiveKit's status of the egress in its answer ("starting", ...).
    status: Plain = ""


class EgressStopRequested(Event, frozen=True, kw_only=True):
    """A tenant asked LiveKit to stop an egress; ``mediai.egress.ended`` follows."""

    TYPE: ClassVar[str] = "mediai.egress.stop_requested.v1"
    PRODUCER: ClassVar[str] = "rooms"
    room: Pseudonym
    egress_id: Plain
    # LiveKit's status of the egress in its answer ("ending", ...).
    status: Plain = ""


class IngressCreated(Event, frozen=True, kw_only=True):
    """A tenant created an ingress (an RTMP/WHIP endpoint or a URL pull) into a room.

    The stream key is a credential and is never recorded.
    """

    TYPE: ClassVar[str] = "mediai.ingress.created.v1"
    PRODUCER: ClassVar[str] = "rooms"
    room: Pseudonym
    ingress_id: Plain
    input_type: Plain  # "rtmp" | "whip" | "url"
    participant_identity: Pseudonym
    name: Personal = ""
    # Where to push the stream (no credential: the stream key is separate).
    url: Plain = ""


class IngressDeleted(Event, frozen=True, kw_only=True):
    """A tenant deleted an ingress; media sent to it afterwards is refused."""

    TYPE: ClassVar[str] = "mediai.ingress.deleted.v1"
    PRODUCER: ClassVar[str] = "rooms"
    room: Pseudonym
    ingress_id: Plain


EVENTS: tuple[type[Event], ...] = (
    RoomStarted,
    RoomFinished,
    ParticipantJoined,
    ParticipantLeft,
    TrackPublished,
    TrackUnpublished,
    EgressStarted,
    EgressUpdated,
    EgressEnded,
    IngressStarted,
    IngressEnded,
    LiveKitWebhookReceived,
    WebhooksDropped,
    RoomCreated,
    RoomDeleted,
    ParticipantRemoved,
    ParticipantUpdated,
    TrackMuted,
    DataMessageSent,
    EgressRequested,
    EgressStopRequested,
    IngressCreated,
    IngressDeleted,
)
