"""Corrections are events, pure: the reconciliation's findings and the API's actions folded in
any order against the webhooks end in one row, and the plan publishes each finding once."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec
from msgspec.structs import replace

from services.rooms import core, media_core, track_core
from services.rooms.core import ParticipantRow, RoomRow
from services.rooms.media_core import EgressRow, IngressRow
from services.rooms.reconcile_core import LiveParticipant, LiveRoom, Model, listed_sids, plan
from services.rooms.track_core import TrackRow
from shared.events import Event
from shared.events.reconciliation import (
    ParticipantFound,
    ParticipantPresumedGone,
    RoomFound,
    RoomPresumedFinished,
    TrackFound,
    TrackPresumedUnpublished,
)
from shared.events.rooms import (
    EgressRequested,
    EgressStarted,
    EgressUpdated,
    IngressCreated,
    IngressDeleted,
    IngressStarted,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    RoomDeleted,
    RoomFinished,
    RoomStarted,
    TrackMuted,
    TrackPublished,
    TrackUnpublished,
)

T = "tabcdefghij"
T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
R = TypeVar("R")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# Each fold as the projection applies it: (row, event data, event time) -> row.
Fold = Callable[[Any, Any, datetime], Any]
FOLDS: dict[type[Event], Fold] = {
    RoomStarted: lambda row, e, _: core.on_room_started(row, e, T),
    RoomFinished: lambda row, e, _: core.on_room_finished(row, e, T),
    RoomFound: lambda row, e, _: core.on_room_found(row, e, T),
    RoomPresumedFinished: lambda row, e, _: core.on_room_presumed_finished(row, e, T),
    RoomDeleted: lambda row, e, when: core.on_room_deleted(
        row, sid=e.room_sid, tenant=T, name=e.room, at=when
    ),
    ParticipantJoined: lambda row, e, _: core.on_participant_joined(row, e, T, "RM_1"),
    ParticipantLeft: lambda row, e, _: core.on_participant_left(row, e, T, "RM_1"),
    ParticipantFound: lambda row, e, _: core.on_participant_found(row, e, T),
    ParticipantPresumedGone: lambda row, e, _: core.on_participant_presumed_gone(row, e, T),
    ParticipantUpdated: lambda row, e, _: core.on_participant_updated(row, e, T, "RM_1"),
    TrackPublished: lambda row, e, _: track_core.on_track_published(row, e, T, "RM_1"),
    TrackUnpublished: lambda row, e, _: track_core.on_track_unpublished(row, e, T, "RM_1"),
    TrackFound: lambda row, e, _: track_core.on_track_found(row, e, T),
    TrackPresumedUnpublished: lambda row, e, _: track_core.on_track_presumed_unpublished(row, e, T),
    TrackMuted: lambda row, e, when: track_core.on_track_muted(row, e, T, "RM_1", when),
    EgressRequested: lambda row, e, when: media_core.on_egress_requested(row, e, T, when),
    EgressStarted: lambda row, e, _: media_core.on_egress_event(row, e, T),
    EgressUpdated: lambda row, e, _: media_core.on_egress_event(row, e, T),
    IngressCreated: lambda row, e, when: media_core.on_ingress_created(row, e, T, when),
    IngressStarted: lambda row, e, _: media_core.on_ingress_event(row, e, T),
    IngressDeleted: lambda row, e, when: media_core.on_ingress_deleted(row, e, T, when),
}


def fold(events: Sequence[tuple[Event, datetime]]) -> Any:
    """One row folded from events about it, each with its CloudEvents time."""
    row = None
    for event, when in events:
        row = FOLDS[type(event)](row, event, when)
    return row


def every_order(events: Sequence[tuple[Event, datetime]]) -> list[Any]:
    """The distinct rows every order of ``events`` (and of them with one applied twice) ends
    in: one, if the folds are order-tolerant."""
    rows = {}
    for order in itertools.permutations([*events, events[0]]):
        row = fold(order)
        rows[msgspec.json.encode(row)] = row
    return list(rows.values())


def at_time(*events: Event) -> list[tuple[Event, datetime]]:
    return [(event, at(100 + i)) for i, event in enumerate(events)]


JOINED = ParticipantJoined(
    room="c1",
    room_sid="RM_1",
    participant_sid="PA_1",
    identity="patient-1",
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
    disconnect_reason="client_initiated",
)


def presumed_gone(last_seen: float, joined: float | None = 10) -> ParticipantPresumedGone:
    return ParticipantPresumedGone(
        room="c1",
        room_sid="RM_1",
        participant_sid="PA_1",
        identity="patient-1",
        joined_at=at(joined) if joined is not None else None,
        last_seen_at=at(last_seen),
        observed_at=at(last_seen + 30),
    )


FOUND = ParticipantFound(
    room="c1",
    room_sid="RM_1",
    participant_sid="PA_1",
    identity="patient-1",
    joined_at=at(10),
    name="Ana",
    observed_at=at(60),
)


# --- the reconciliation's findings against the webhooks ----------------------------------------


def test_a_presumed_leave_and_the_real_one_end_the_same_in_any_order() -> None:
    [row] = every_order(at_time(JOINED, presumed_gone(40), LEFT))
    assert (row.left_at, row.left_by, row.disconnect_reason) == (
        at(50),
        core.WEBHOOK,
        "client_initiated",
    )
    [alone] = every_order(at_time(JOINED, presumed_gone(40)))
    assert (alone.left_at, alone.left_by, alone.joined_at, alone.name) == (
        at(40),
        core.RECONCILE,
        at(10),
        "Ana",
    )


def test_a_presumption_never_ends_a_stay_before_its_join() -> None:
    # Seen (rounded down to 10 s) in the very second it joined at 10.4 s; the join came late.
    joined = replace(JOINED, joined_at=at(10.4))
    [row] = every_order(at_time(joined, presumed_gone(10, joined=None)))
    assert (row.joined_at, row.left_at) == (at(10.4), at(10.4))


def test_only_a_listing_undoes_a_presumption() -> None:
    back = fold(at_time(JOINED, presumed_gone(40), FOUND))
    assert (back.left_at, back.left_by) == (None, "")
    [left] = every_order(at_time(JOINED, LEFT, FOUND))
    assert left.left_at == at(50)


STARTED = RoomStarted(room="c1", room_sid="RM_1", started_at=at(0), empty_timeout=60)
FINISHED = RoomFinished(room="c1", room_sid="RM_1", finished_at=at(100), end_reason="idle_timeout")
ROOM_GONE = RoomPresumedFinished(
    room="c1", room_sid="RM_1", last_seen_at=at(90), observed_at=at(120)
)


def test_rooms_finished_by_presumption_api_and_webhook_end_the_same_in_any_order() -> None:
    deleted = RoomDeleted(room="c1", room_sid="RM_1")
    # LiveKit's room_finished after our delete names no reason: ours stays, in any order.
    unnamed = replace(FINISHED, end_reason="")
    [quiet] = every_order([*at_time(STARTED, unnamed), (deleted, at(95))])
    assert (quiet.finished_at, quiet.finished_by, quiet.end_reason) == (
        at(100),
        core.WEBHOOK,
        "api_delete",
    )
    [row] = every_order([*at_time(STARTED, ROOM_GONE, FINISHED), (deleted, at(95))])
    assert (row.finished_at, row.finished_by, row.end_reason) == (
        at(100),
        core.WEBHOOK,
        "idle_timeout",
    )
    [by_api] = every_order([*at_time(STARTED, ROOM_GONE), (deleted, at(95))])
    assert (by_api.finished_at, by_api.finished_by) == (at(95), core.API)
    # A late room_started is a past fact: it does not reopen a room presumed finished...
    [presumed] = every_order(at_time(STARTED, ROOM_GONE))
    assert (presumed.finished_at, presumed.created_at) == (at(90), at(0))
    # ...while LiveKit listing it now does.
    found = RoomFound(room="c1", room_sid="RM_1", observed_at=at(130), empty_timeout=60)
    assert fold(at_time(STARTED, ROOM_GONE, found)).finished_at is None


PUBLISHED = TrackPublished(
    room="c1",
    room_sid="RM_1",
    participant_sid="PA_1",
    identity="patient-1",
    track_sid="TR_1",
    track_type="audio",
    source="microphone",
    published_at=at(12),
)


def test_a_presumed_unpublish_and_the_real_one_end_the_same_in_any_order() -> None:
    gone = TrackPresumedUnpublished(
        room="c1",
        room_sid="RM_1",
        participant_sid="PA_1",
        identity="patient-1",
        track_sid="TR_1",
        last_seen_at=at(40),
        observed_at=at(70),
    )
    real = TrackUnpublished(
        room="c1",
        room_sid="RM_1",
        participant_sid="PA_1",
        identity="patient-1",
        track_sid="TR_1",
        track_type="audio",
        unpublished_at=at(50),
    )
    [row] = every_order(at_time(PUBLISHED, gone, real))
    assert (row.unpublished_at, row.unpublished_by, row.source) == (
        at(50),
        core.WEBHOOK,
        "microphone",
    )


def test_the_newest_mute_state_wins_whatever_the_order() -> None:
    def found(muted: bool, seconds: float) -> TrackFound:
        return TrackFound(
            room="c1",
            room_sid="RM_1",
            participant_sid="PA_1",
            identity="patient-1",
            track_sid="TR_1",
            track_type="audio",
            muted=muted,
            observed_at=at(seconds),
        )

    muted = TrackMuted(
        room="c1", identity="patient-1", track_sid="TR_1", muted=True, participant_sid="PA_1"
    )
    # Our API muted it at 20 s; a listing at 15 s said unmuted (older), one at 30 s too (newer).
    [row] = every_order([(PUBLISHED, at(12)), (muted, at(20)), (found(False, 15), at(15))])
    assert (row.muted, row.muted_at, row.source) == (True, at(20), "microphone")
    [later] = every_order([(PUBLISHED, at(12)), (muted, at(20)), (found(False, 30), at(30))])
    assert (later.muted, later.muted_at) == (False, at(30))


# --- the API's actions against the webhooks -----------------------------------------------------


def test_an_update_before_or_after_the_join_ends_the_same() -> None:
    update = ParticipantUpdated(
        room="c1", identity="patient-1", participant_sid="PA_1", metadata='{"role":"patient"}'
    )
    [row] = every_order([(JOINED, at(10)), (update, at(20))])
    assert (row.metadata, row.name, row.joined_at) == ('{"role":"patient"}', "Ana", at(10))


def test_egress_and_ingress_actions_commute_with_their_webhooks() -> None:
    requested = EgressRequested(
        room="c1",
        egress_id="EG_1",
        kind="room_composite",
        outputs=["mp4"],
        room_sid="RM_1",
        status="starting",
    )
    started = EgressStarted(room="c1", egress_id="EG_1", started_at=at(5), status="starting")
    active = EgressUpdated(room="c1", egress_id="EG_1", status="active", updated_at=at(6))
    [egress] = every_order([(requested, at(4)), (started, at(5)), (active, at(6))])
    assert isinstance(egress, EgressRow)
    assert (egress.status, egress.requested_at, egress.outputs, egress.started_at) == (
        "active",
        at(4),
        ["mp4"],
        at(5),
    )
    created = IngressCreated(
        room="c1",
        ingress_id="IN_1",
        input_type="whip",
        participant_identity="cam-1",
        url="http://whip",
    )
    publishing = IngressStarted(
        room="c1", ingress_id="IN_1", input_type="whip", started_at=at(8), status="publishing"
    )
    deleted = IngressDeleted(room="c1", ingress_id="IN_1")
    [ingress] = every_order([(created, at(7)), (publishing, at(8)), (deleted, at(9))])
    assert isinstance(ingress, IngressRow)
    assert (ingress.url, ingress.status, ingress.created_at, ingress.deleted_at) == (
        "http://whip",
        "publishing",
        at(7),
        at(9),
    )


# --- the plan -------------------------------------------------------------------------------------

ROOM = RoomRow(
    sid="RM_1", tenant=T, name="c1", livekit_name=f"{T}~c1", created_at=at(0), updated_at=at(0)
)
PA = ParticipantRow(
    sid="PA_1",
    room_sid="RM_1",
    tenant=T,
    room="c1",
    identity="patient-1",
    joined_at=at(10),
    updated_at=at(10),
)
TRACK = TrackRow(
    sid="TR_1",
    participant_sid="PA_1",
    room_sid="RM_1",
    tenant=T,
    type="audio",
    muted_at=at(12),
    updated_at=at(12),
)


def fresh(row: R) -> R:
    """The row as LiveKit lists it (a listing has no write time)."""
    return replace(row, updated_at=None)  # type: ignore[type-var]


def model(
    rooms: Sequence[RoomRow],
    participants: Sequence[ParticipantRow] = (),
    tracks: Sequence[TrackRow] = (),
) -> Model:
    return Model(
        rooms={r.sid: r for r in rooms},
        participants={p.sid: p for p in participants},
        tracks={t.sid: t for t in tracks},
    )


def listing(*participants: LiveParticipant) -> list[LiveRoom]:
    return [LiveRoom(row=fresh(ROOM), participants=list(participants))]


def folded(state: Model, events: Sequence[Event]) -> Model:
    """The model after the projection folded ``events`` (write time: long ago)."""
    rooms, participants, tracks = dict(state.rooms), dict(state.participants), dict(state.tracks)
    for event in events:
        table: dict[str, Any] = (
            rooms
            if isinstance(event, RoomFound | RoomPresumedFinished)
            else tracks
            if isinstance(event, TrackFound | TrackPresumedUnpublished)
            else participants
        )
        sid = getattr(event, "track_sid", None) or getattr(event, "participant_sid", None)
        sid = sid or event.room_sid  # type: ignore[attr-defined]
        table[sid] = replace(FOLDS[type(event)](table.get(sid), event, at(0)), updated_at=at(0))
    return Model(rooms=rooms, participants=participants, tracks=tracks)


def test_in_step_means_nothing_to_publish() -> None:
    live = listing(LiveParticipant(row=fresh(PA), tracks=[replace(fresh(TRACK), muted_at=None)]))
    assert (
        plan(model([ROOM], [PA], [TRACK]), live, {}, observed_at=at(100), settled_before=at(95))
        == []
    )


def test_a_dropped_leave_is_presumed_at_the_last_sighting_with_a_fixed_id() -> None:
    sightings = {"PA_1": at(70), "TR_1": at(70), "RM_1": at(99)}
    state = model([ROOM], [PA], [TRACK])
    findings = plan(state, listing(), sightings, observed_at=at(100), settled_before=at(95))
    events = {type(f.event): f.event for f in findings}
    assert set(events) == {ParticipantPresumedGone, TrackPresumedUnpublished}
    gone = events[ParticipantPresumedGone]
    assert isinstance(gone, ParticipantPresumedGone)
    assert (gone.last_seen_at, gone.joined_at, gone.observed_at) == (at(70), at(10), at(100))
    assert {f.key for f in findings} == {"c1"} and {f.tenant for f in findings} == {T}
    # Another pass (or replica) before the projection caught up: the same events, same ids.
    again = plan(state, listing(), sightings, observed_at=at(130), settled_before=at(125))
    assert [f.event_id for f in again] == [f.event_id for f in findings]
    # Folded, there is nothing left to find.
    after = folded(state, [f.event for f in findings])
    assert plan(after, listing(), sightings, observed_at=at(160), settled_before=at(155)) == []
    # Never listed: last seen when it joined.
    [unseen] = [
        f.event
        for f in plan(state, listing(), {}, observed_at=at(100), settled_before=at(95))
        if isinstance(f.event, ParticipantPresumedGone)
    ]
    assert unseen.last_seen_at == at(10)


def test_a_room_that_is_gone_takes_its_participants_and_tracks_with_it() -> None:
    findings = plan(
        model([ROOM], [PA], [TRACK]),
        [],
        {"RM_1": at(80)},
        observed_at=at(100),
        settled_before=at(95),
    )
    assert [type(f.event) for f in findings] == [
        TrackPresumedUnpublished,
        ParticipantPresumedGone,
        RoomPresumedFinished,
    ]
    assert findings[-1].event.last_seen_at == at(80)  # type: ignore[attr-defined]


def test_what_livekit_lists_but_the_model_lacks_is_found_once() -> None:
    live = listing(LiveParticipant(row=fresh(PA), tracks=[replace(fresh(TRACK), muted=True)]))
    findings = plan(model([]), live, {}, observed_at=at(100), settled_before=at(95))
    assert [type(f.event) for f in findings] == [RoomFound, ParticipantFound, TrackFound]
    after = folded(model([]), [f.event for f in findings])
    assert after.tracks["TR_1"].muted and after.participants["PA_1"].joined_at == at(10)
    assert plan(after, live, {}, observed_at=at(130), settled_before=at(125)) == []
    # A participant presumed gone that LiveKit lists again is found back.
    gone = replace(PA, left_at=at(50), left_by=core.RECONCILE)
    [back] = plan(
        model([ROOM], [gone]),
        listing(LiveParticipant(row=fresh(PA))),
        {},
        observed_at=at(100),
        settled_before=at(95),
    )
    assert isinstance(back.event, ParticipantFound)


def test_a_found_participant_names_the_patient_its_token_names() -> None:
    live = listing(LiveParticipant(row=fresh(PA), patient_ref="pac-000123"))
    findings = plan(model([ROOM]), live, {}, observed_at=at(100), settled_before=at(95))
    [found] = [f.event for f in findings if isinstance(f.event, ParticipantFound)]
    assert found.patient_ref == "pac-000123"


def test_rows_written_after_the_listing_began_are_left_to_their_webhooks() -> None:
    just_joined = replace(PA, sid="PA_3", updated_at=at(99))
    just_started = replace(ROOM, sid="RM_2", name="c2", updated_at=at(99))
    state = model([ROOM, just_started], [just_joined])
    assert plan(state, listing(), {}, observed_at=at(100), settled_before=at(95)) == []
    # And one that LiveKit lists as just joined: its participant_joined is on its way.
    arriving = listing(LiveParticipant(row=replace(fresh(PA), sid="PA_4", joined_at=at(97))))
    assert plan(model([ROOM]), arriving, {}, observed_at=at(100), settled_before=at(95)) == []


def test_the_sightings_to_remember_are_everything_listed() -> None:
    live = listing(LiveParticipant(row=fresh(PA), tracks=[fresh(TRACK)]))
    assert listed_sids(live) == ["RM_1", "PA_1", "TR_1"]
