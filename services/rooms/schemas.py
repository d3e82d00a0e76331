"""The rooms service's request and response bodies (camelCase on the wire, like the spec)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

from services.rooms.core import ParticipantRow, RoomRow
from services.rooms.media_core import EgressRow, IngressRow
from services.rooms.track_core import TrackRow
from shared.naming import FileName, Identity, PatientRef, RoomName

Seconds = Annotated[int, msgspec.Meta(ge=0, le=7 * 86400)]
# Metadata is sealed before LiveKit holds it (services/rooms/privacy.py): sealed, 46 KiB of text
# stay under LiveKit's 64,000-byte limit on metadata.
Metadata = Annotated[str, msgspec.Meta(max_length=46 * 1024)]
DisplayName = Annotated[str, msgspec.Meta(max_length=128)]
RtmpUrl = Annotated[str, msgspec.Meta(pattern=r"^rtmps?://", max_length=2048)]
TrackSource = Literal["camera", "microphone", "screen_share", "screen_share_audio"]


class _Body(msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True):
    pass


class _View(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    pass


# --- rooms ------------------------------------------------------------------------------------


class CreateRoomRequest(_Body, frozen=True, kw_only=True):
    name: RoomName
    # Seconds an empty room stays open before LiveKit closes it (LiveKit's default if unset).
    empty_timeout: Seconds | None = None
    # Seconds the room stays open after the last participant left.
    departure_timeout: Seconds | None = None
    max_participants: Annotated[int, msgspec.Meta(ge=0, le=10_000)] | None = None
    metadata: Metadata = ""
    # The patient the consultation room is for (the clinic's pseudonymous id, never a name):
    # its metadata is then sealed with that patient's key, and erased with the patient.
    patient_ref: PatientRef | None = None


class RoomView(_View, frozen=True, kw_only=True):
    name: str
    sid: str
    created_at: datetime | None
    empty_timeout: int
    departure_timeout: int
    max_participants: int
    metadata: str
    num_participants: int

    @classmethod
    def of(cls, row: RoomRow, present: int) -> RoomView:
        return cls(
            name=row.name,
            sid=row.sid,
            created_at=row.created_at,
            empty_timeout=row.empty_timeout,
            departure_timeout=row.departure_timeout,
            max_participants=row.max_participants,
            metadata=row.metadata,
            num_participants=present,
        )


class RoomList(_View, frozen=True, kw_only=True):
    rooms: list[RoomView]


# --- participants -----------------------------------------------------------------------------


class TrackView(_View, frozen=True, kw_only=True):
    sid: str
    type: str
    source: str
    name: str
    mime_type: str
    muted: bool

    @classmethod
    def of(cls, row: TrackRow) -> TrackView:
        return cls(
            sid=row.sid,
            type=row.type,
            source=row.source,
            name=row.name,
            mime_type=row.mime_type,
            muted=row.muted,
        )


class ParticipantView(_View, frozen=True, kw_only=True):
    sid: str
    identity: str
    name: str
    kind: str
    metadata: str
    joined_at: datetime | None
    tracks: list[TrackView]

    @classmethod
    def of(cls, row: ParticipantRow, tracks: list[TrackRow]) -> ParticipantView:
        return cls(
            sid=row.sid,
            identity=row.identity,
            name=row.name,
            kind=row.kind,
            metadata=row.metadata,
            joined_at=row.joined_at,
            tracks=[TrackView.of(t) for t in tracks],
        )


class ParticipantList(_View, frozen=True, kw_only=True):
    participants: list[ParticipantView]


class MuteTrackRequest(_Body, frozen=True, kw_only=True):
    muted: bool = True


class Permission(_Body, frozen=True, kw_only=True):
    can_subscribe: bool = True
    can_publish: bool = True
    can_publish_data: bool = True
    # Sources it may publish; empty = any.
    can_publish_sources: list[TrackSource] = msgspec.field(default_factory=list)
    hidden: bool = False


class UpdateParticipantRequest(_Body, frozen=True, kw_only=True):
    """Only what is given changes."""

    name: DisplayName | None = None
    metadata: Metadata | None = None
    attributes: dict[Annotated[str, msgspec.Meta(max_length=128)], str] | None = None
    permission: Permission | None = None


# --- data messages ----------------------------------------------------------------------------


class SendDataRequest(_Body, frozen=True, kw_only=True):
    # The message: text, or bytes in base64 (``encoding``).
    data: Annotated[str, msgspec.Meta(min_length=1, max_length=64 * 1024)]
    encoding: Literal["utf-8", "base64"] = "utf-8"
    # What the message is about, for the receivers' filters (see docs/rooms.md).
    topic: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    # Empty = everyone in the room.
    destination_identities: Annotated[list[Identity], msgspec.Meta(max_length=100)] = msgspec.field(
        default_factory=list
    )
    reliable: bool = True


class DataSentView(_View, frozen=True, kw_only=True):
    room: str
    topic: str | None
    destination_identities: list[str]
    size_bytes: int


# --- egress and ingress -----------------------------------------------------------------------


class StartEgressRequest(_Body, frozen=True, kw_only=True):
    room: RoomName
    # room_composite: the whole room, composed; track: one track as it is (no transcoding).
    kind: Literal["room_composite", "track"] = "room_composite"
    # room_composite writes mp4 or ogg (audio only) files, hls segments or rtmp streams;
    # track writes a file in the track's own codec.
    output: Literal["mp4", "ogg", "hls", "rtmp"] = "mp4"
    rtmp_urls: Annotated[list[RtmpUrl], msgspec.Meta(max_length=5)] = msgspec.field(
        default_factory=list
    )
    # File or playlist name, without extension; kept under a folder of the tenant and room.
    filename: FileName | None = None
    track_sid: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    layout: Literal["grid", "speaker", "single-speaker"] | None = None
    audio_only: bool = False


class EgressView(_View, frozen=True, kw_only=True):
    egress_id: str
    room: str
    kind: str
    outputs: list[str]
    status: str
    requested_at: datetime | None
    started_at: datetime | None
    ended_at: datetime | None
    error: str

    @classmethod
    def of(cls, row: EgressRow) -> EgressView:
        return cls(
            egress_id=row.egress_id,
            room=row.room,
            kind=row.kind,
            outputs=row.outputs,
            status=row.status,
            requested_at=row.requested_at,
            started_at=row.started_at,
            ended_at=row.ended_at,
            error=row.error,
        )


class EgressList(_View, frozen=True, kw_only=True):
    egress: list[EgressView]


class CreateIngressRequest(_Body, frozen=True, kw_only=True):
    room: RoomName
    input_type: Literal["rtmp", "whip", "url"]
    participant_identity: Identity
    participant_name: DisplayName | None = None
    name: DisplayName | None = None
    # The media to pull, for input_type "url" (HTTP, HLS, SRT...).
    url: Annotated[str, msgspec.Meta(max_length=2048)] | None = None
    enable_transcoding: bool | None = None


class IngressView(_View, frozen=True, kw_only=True):
    ingress_id: str
    room: str
    input_type: str
    name: str
    participant_identity: str
    url: str
    status: str
    started_at: datetime | None
    ended_at: datetime | None
    error: str
    created_at: datetime | None

    @classmethod
    def of(cls, row: IngressRow) -> IngressView:
        return cls(
            ingress_id=row.ingress_id,
            room=row.room,
            input_type=row.input_type,
            name=row.name,
            participant_identity=row.participant_identity,
            url=row.url,
            status=row.status,
            started_at=row.started_at,
            ended_at=row.ended_at,
            error=row.error,
            created_at=row.created_at,
        )


class IngressCreatedView(IngressView, frozen=True, kw_only=True):
    # The credential to push media with (RTMP stream key / WHIP token): shown only here.
    stream_key: str


class IngressList(_View, frozen=True, kw_only=True):
    ingress: list[IngressView]
