"""The webhook translation (services/webhooks/core.py): pure, no infrastructure."""

from __future__ import annotations

from datetime import UTC, datetime

from livekit import api as lk
from livekit.protocol import models
from livekit.protocol.webhook import WebhookEvent

from services.webhooks.core import Publication, translate
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
from shared.livekit_proto import from_unix
from shared.naming import SYSTEM_TENANT, tenant_room

TENANT = "tabcdefghij"
ROOM = models.Room(
    sid="RM_1",
    name=f"{TENANT}~consult-1",
    creation_time=1_760_000_000,
    creation_time_ms=1_760_000_000_250,
    empty_timeout=60,
    turn_password="secret",
)
PATIENT = models.ParticipantInfo(
    sid="PA_1",
    identity="patient-1",
    name="Ana",
    joined_at=1_760_000_010,
    joined_at_ms=1_760_000_010_700,
)
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def hook(event: str, **fields: object) -> WebhookEvent:
    return WebhookEvent(event=event, id=f"EV_{event}", created_at=1_760_000_010, **fields)  # type: ignore[arg-type]


def only(webhook: WebhookEvent) -> Publication:
    [publication] = translate(webhook, body=b"{}", received_at=NOW)
    return publication


def test_room_events_carry_the_tenant_its_room_name_and_livekit_times() -> None:
    started = only(hook("room_started", room=ROOM))
    assert started.tenant == TENANT
    assert started.key == "consult-1"
    assert started.event_id == "EV_room_started"
    assert started.data == RoomStarted(
        room="consult-1",
        room_sid="RM_1",
        empty_timeout=60,
        started_at=datetime(2025, 10, 9, 8, 53, 20, 250000, tzinfo=UTC),
    )
    finished = only(
        hook("room_finished", room=ROOM, room_end_reason=models.RoomEndReason.ROOM_END_API_DELETE)
    )
    assert isinstance(finished.data, RoomFinished)
    assert finished.data.end_reason == "api_delete"
    assert finished.time == from_unix(1_760_000_010)


def test_participant_kind_comes_from_livekit_so_agents_are_told_apart() -> None:
    agent = models.ParticipantInfo(
        sid="PA_2", identity="agent-x", kind=models.ParticipantInfo.Kind.AGENT
    )
    data = only(hook("participant_joined", room=ROOM, participant=agent)).data
    assert isinstance(data, ParticipantJoined)
    assert data.kind == "agent"
    assert data.room_sid == "RM_1"
    data = only(hook("participant_joined", room=ROOM, participant=PATIENT)).data
    assert data.kind == "standard"
    assert data.name == "Ana"
    assert data.joined_at == datetime.fromtimestamp(1_760_000_010.7, UTC)
    assert data.patient_ref == ""  # a token without a patient


def test_a_patients_join_names_the_patient_from_the_signed_attribute() -> None:
    for attribute, expected in (("pac-000123", "pac-000123"), ("Ana Souza", ""), ("p\n", "")):
        patient = models.ParticipantInfo(
            sid="PA_3",
            identity="sala-1-p",
            name="Ana",
            attributes={"mediai.patient_ref": attribute},
        )
        data = only(hook("participant_joined", room=ROOM, participant=patient)).data
        assert isinstance(data, ParticipantJoined) and data.patient_ref == expected


def test_a_leave_is_never_before_its_join_and_aborts_are_marked() -> None:
    # The webhook's whole-second stamp (…010) is before the join (…010.7).
    left = only(hook("participant_left", room=ROOM, participant=PATIENT)).data
    assert isinstance(left, ParticipantLeft)
    assert left.left_at == left.joined_at
    assert not left.aborted
    aborted = only(hook("participant_connection_aborted", room=ROOM, participant=PATIENT)).data
    assert aborted.aborted


def test_tracks() -> None:
    track = models.TrackInfo(
        sid="TR_1",
        type=models.TrackType.AUDIO,
        source=models.TrackSource.MICROPHONE,
        mime_type="audio/opus",
    )
    published = only(hook("track_published", room=ROOM, participant=PATIENT, track=track)).data
    assert isinstance(published, TrackPublished)
    assert (published.track_type, published.source, published.identity) == (
        "audio",
        "microphone",
        "patient-1",
    )
    unpublished = only(hook("track_unpublished", room=ROOM, participant=PATIENT, track=track)).data
    assert isinstance(unpublished, TrackUnpublished)
    assert unpublished.track_sid == "TR_1"


def test_egress_and_ingress_take_the_room_from_their_info() -> None:
    egress = lk.EgressInfo(
        egress_id="EG_1",
        room_id="RM_1",
        room_name=f"{TENANT}~consult-1",
        status=lk.EgressStatus.EGRESS_ACTIVE,
        started_at=1_760_000_005_000_000_000,
        room_composite=lk.RoomCompositeEgressRequest(),
    )
    started = only(hook("egress_started", egress_info=egress))
    assert started.tenant == TENANT
    assert started.data == EgressStarted(
        room="consult-1",
        egress_id="EG_1",
        room_sid="RM_1",
        kind="room_composite",
        status="active",
        started_at=datetime.fromtimestamp(1_760_000_005, UTC),
    )
    assert isinstance(only(hook("egress_updated", egress_info=egress)).data, EgressUpdated)
    egress.status = lk.EgressStatus.EGRESS_FAILED
    egress.error = "no storage"
    ended = only(hook("egress_ended", egress_info=egress)).data
    assert isinstance(ended, EgressEnded)
    assert (ended.status, ended.error) == ("failed", "no storage")

    ingress = lk.IngressInfo(
        ingress_id="IN_1",
        room_name=f"{TENANT}~consult-1",
        input_type=lk.IngressInput.WHIP_INPUT,
        participant_identity="cam",
    )
    data = only(hook("ingress_started", ingress_info=ingress)).data
    assert isinstance(data, IngressStarted)
    assert data.input_type == "whip"
    assert isinstance(only(hook("ingress_ended", ingress_info=ingress)).data, IngressEnded)


def test_any_other_type_is_kept_whole_without_credentials() -> None:
    publication = only(hook("room_metadata_changed", room=ROOM))
    data = publication.data
    assert isinstance(data, LiveKitWebhookReceived)
    assert data.webhook_event == "room_metadata_changed"
    assert data.room == "consult-1"
    assert data.payload["room"]["sid"] == "RM_1"
    assert "turnPassword" not in data.payload["room"]


def test_a_room_that_is_not_a_tenants_is_recorded_under_system() -> None:
    foreign = models.Room(sid="RM_9", name="made-elsewhere")
    publication = only(hook("room_started", room=foreign))
    assert publication.tenant == SYSTEM_TENANT
    assert publication.data.room == "made-elsewhere"
    assert tenant_room("tABCDEFGHIJ~x") == (SYSTEM_TENANT, "tABCDEFGHIJ~x")


def test_dropped_webhooks_are_reported_as_their_own_event() -> None:
    main, dropped = translate(
        hook("participant_joined", room=ROOM, participant=PATIENT, num_dropped=7),
        body=b"{}",
        received_at=NOW,
    )
    assert isinstance(main.data, ParticipantJoined)
    assert dropped.data == WebhooksDropped(
        num_dropped=7,
        webhook_event="participant_joined",
        webhook_id="EV_participant_joined",
        reported_at=main.time,
    )
    assert dropped.event_id != main.event_id
    assert dropped.tenant == SYSTEM_TENANT


def test_a_webhook_without_id_is_keyed_by_its_body_so_retries_still_dedup() -> None:
    first = translate(WebhookEvent(event="room_started", room=ROOM), body=b"abc", received_at=NOW)
    again = translate(WebhookEvent(event="room_started", room=ROOM), body=b"abc", received_at=NOW)
    assert first[0].event_id == again[0].event_id
    assert first[0].event_id.startswith("lkwh-")
    assert first[0].time == NOW  # no LiveKit stamp: the receive time stands in


def test_livekit_timestamps_of_every_unit() -> None:
    second = datetime(2025, 10, 9, 8, 53, 20, tzinfo=UTC)
    for value in (
        1_760_000_000,
        1_760_000_000_000,
        1_760_000_000_000_000,
        1_760_000_000_000_000_000,
    ):
        assert from_unix(value) == second
    assert from_unix(0) is None
