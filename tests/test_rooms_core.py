"""The rooms service's pure core: read-model rules of webhook events, request building
(the reconciliation and the API's actions: tests/test_rooms_corrections_core.py)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from livekit import api as lk

from services.rooms import core, media_core, track_core
from services.rooms.core import ParticipantRow, RoomRow
from services.rooms.media_core import EgressRow, IngressRow
from services.rooms.requests import (
    MAX_DATA_BYTES,
    RequestError,
    data_payload,
    egress_request,
    ingress_request,
)
from services.rooms.schemas import CreateIngressRequest, SendDataRequest, StartEgressRequest
from shared.events.rooms import (
    EgressEnded,
    EgressStarted,
    EgressUpdated,
    IngressEnded,
    IngressStarted,
    ParticipantJoined,
    ParticipantLeft,
    RoomFinished,
    RoomStarted,
    TrackPublished,
    TrackUnpublished,
)

T = "tabcdefghij"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


STARTED = RoomStarted(room="c1", room_sid="RM_1", started_at=at(0), empty_timeout=60)
FINISHED = RoomFinished(room="c1", room_sid="RM_1", finished_at=at(100), end_reason="idle_timeout")
JOINED = ParticipantJoined(
    room="c1",
    room_sid="RM_1",
    participant_sid="PA_1",
    identity="patient-1",
    kind="standard",
    joined_at=at(10),
    name="Ana",
)
LEFT = ParticipantLeft(
    room="c1",
    room_sid="RM_1",
    participant_sid="PA_1",
    identity="patient-1",
    left_at=at(50),
    joined_at=at(10),
)


def fold_room(events: list[RoomStarted | RoomFinished]) -> RoomRow | None:
    row = None
    for event in events:
        row = (
            core.on_room_started(row, event, T)
            if isinstance(event, RoomStarted)
            else core.on_room_finished(row, event, T)
        )
    return row


def fold_participant(events: list[ParticipantJoined | ParticipantLeft]) -> ParticipantRow | None:
    row = None
    for event in events:
        row = (
            core.on_participant_joined(row, event, T, "RM_1")
            if isinstance(event, ParticipantJoined)
            else core.on_participant_left(row, event, T, "RM_1")
        )
    return row


def test_room_rows_end_the_same_in_any_order_and_with_duplicates() -> None:
    results = {
        fold_room(list(order)) for order in itertools.permutations([STARTED, FINISHED, STARTED])
    }
    assert len(results) == 1
    [row] = results
    assert row is not None
    assert row.finished_at == at(100)
    assert row.created_at == at(0)
    assert row.end_reason == "idle_timeout"
    assert row.livekit_name == f"{T}~c1"


def test_a_leave_before_its_join_still_ends_left_with_everything_known() -> None:
    for order in itertools.permutations([JOINED, LEFT, JOINED, LEFT]):
        row = fold_participant(list(order))
        assert row is not None
        assert (row.left_at, row.joined_at, row.name, row.left_by) == (
            at(50),
            at(10),
            "Ana",
            core.WEBHOOK,
        )


def test_the_webhook_corrects_an_inferred_leave_but_not_the_other_way() -> None:
    joined = fold_participant([JOINED])
    assert joined is not None
    inferred = core.leave(joined, at=at(80), by=core.RECONCILE)
    assert core.on_participant_left(inferred, LEFT, T, "RM_1").left_at == at(50)
    left = core.on_participant_left(joined, LEFT, T, "RM_1")
    assert core.leave(left, at=at(80), by=core.RECONCILE) == left
    # LiveKit listing the participant undoes only the inference.
    assert core.participant_seen(inferred, joined).left_at is None
    assert core.participant_seen(left, joined).left_at == at(50)


def test_an_agent_keeps_its_kind_whatever_arrives_first() -> None:
    track = TrackPublished(
        room="c1",
        room_sid="RM_1",
        participant_sid="PA_9",
        identity="agent",
        track_sid="TR_9",
        track_type="audio",
        published_at=at(11),
    )
    joined = ParticipantJoined(
        room="c1",
        room_sid="RM_1",
        participant_sid="PA_9",
        identity="agent",
        kind="agent",
        joined_at=at(10),
    )
    implied = core.participant_from_track(track, T, "RM_1")
    assert core.on_participant_joined(implied, joined, T, "RM_1").kind == "agent"


def test_tracks_unpublished_first_stay_unpublished() -> None:
    published = TrackPublished(
        room="c1",
        room_sid="RM_1",
        participant_sid="PA_1",
        identity="patient-1",
        track_sid="TR_1",
        track_type="audio",
        source="microphone",
        published_at=at(12),
    )
    unpublished = TrackUnpublished(
        room="c1",
        room_sid="RM_1",
        participant_sid="PA_1",
        identity="patient-1",
        track_sid="TR_1",
        track_type="audio",
        unpublished_at=at(30),
    )
    first = track_core.on_track_unpublished(None, unpublished, T, "RM_1")
    row = track_core.on_track_published(first, published, T, "RM_1")
    assert (row.unpublished_at, row.published_at, row.source) == (at(30), at(12), "microphone")


def test_egress_status_only_moves_forward_and_the_first_end_is_final() -> None:
    started = EgressStarted(room="c1", egress_id="EG_1", started_at=at(5), status="starting")
    active = EgressUpdated(room="c1", egress_id="EG_1", status="active", updated_at=at(6))
    ended = EgressEnded(room="c1", egress_id="EG_1", ended_at=at(60), status="complete")
    for order in itertools.permutations([started, active, ended]):
        row: EgressRow | None = None
        for event in order:
            row = media_core.on_egress_event(row, event, T)
        assert row is not None
        assert (row.status, row.started_at, row.ended_at) == ("complete", at(5), at(60))
    requested = EgressRow(
        egress_id="EG_1",
        tenant=T,
        room="c1",
        status="starting",
        requested_at=at(4),
        outputs=["mp4"],
    )
    after_webhooks = media_core.on_egress_event(None, active, T)
    merged = media_core.egress_requested(after_webhooks, requested)
    assert (merged.status, merged.requested_at, merged.outputs) == ("active", at(4), ["mp4"])


def test_an_ingress_can_start_and_end_again_and_the_latest_state_wins() -> None:
    def started(s: float) -> IngressStarted:
        return IngressStarted(
            room="c1", ingress_id="IN_1", input_type="rtmp", started_at=at(s), status="publishing"
        )

    def ended(s: float) -> IngressEnded:
        return IngressEnded(
            room="c1", ingress_id="IN_1", input_type="rtmp", ended_at=at(s), status="inactive"
        )

    row: IngressRow | None = None
    for event in [started(0), ended(10), ended(30), started(20)]:
        row = media_core.on_ingress_event(row, event, T)
    assert row is not None
    assert (row.status, row.ended_at) == ("inactive", at(30))


# --- requests ---------------------------------------------------------------------------------


def test_data_payloads() -> None:
    assert data_payload(SendDataRequest(data="olá")) == "olá".encode()
    assert data_payload(SendDataRequest(data="AAE=", encoding="base64")) == b"\x00\x01"
    with pytest.raises(RequestError, match="base64"):
        data_payload(SendDataRequest(data="not base64!", encoding="base64"))
    with pytest.raises(RequestError, match="at most"):
        data_payload(SendDataRequest(data="x" * (MAX_DATA_BYTES + 1)))
    with pytest.raises(RequestError, match="LiveKit's own"):
        data_payload(SendDataRequest(data="x", topic="lk.chat"))


def test_egress_requests_write_under_the_tenants_folder() -> None:
    request, outputs = egress_request(T, "c1", f"{T}~c1", StartEgressRequest(room="c1"))
    assert isinstance(request, lk.RoomCompositeEgressRequest)
    assert outputs == ["mp4"]
    assert request.file_outputs[0].filepath == f"{T}/c1/{{time}}.mp4"
    hls, _ = egress_request(
        T, "c1", f"{T}~c1", StartEgressRequest(room="c1", output="hls", filename="visit")
    )
    assert hls.segment_outputs[0].playlist_name == f"{T}/c1/visit.m3u8"
    rtmp, _ = egress_request(
        T,
        "c1",
        f"{T}~c1",
        StartEgressRequest(room="c1", output="rtmp", rtmp_urls=["rtmp://live.example/app/key"]),
    )
    assert list(rtmp.stream_outputs[0].urls) == ["rtmp://live.example/app/key"]
    track, outputs = egress_request(
        T, "c1", f"{T}~c1", StartEgressRequest(room="c1", kind="track", track_sid="TR_1")
    )
    assert isinstance(track, lk.TrackEgressRequest)
    assert track.file.filepath.startswith(f"{T}/c1/")
    for bad in (
        StartEgressRequest(room="c1", output="rtmp"),
        StartEgressRequest(room="c1", kind="track"),
        StartEgressRequest(room="c1", kind="track", track_sid="TR_1", output="hls"),
    ):
        with pytest.raises(RequestError):
            egress_request(T, "c1", f"{T}~c1", bad)


def test_ingress_requests() -> None:
    request = ingress_request(
        f"{T}~c1", CreateIngressRequest(room="c1", input_type="whip", participant_identity="cam-1")
    )
    assert request.input_type == lk.IngressInput.WHIP_INPUT
    assert request.room_name == f"{T}~c1"
    with pytest.raises(RequestError, match="needs url"):
        ingress_request(
            f"{T}~c1",
            CreateIngressRequest(room="c1", input_type="url", participant_identity="cam-1"),
        )
