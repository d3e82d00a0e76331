"""Billing's pure core: metering, the in-memory projection, pricing, periods, limits, audits."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.billing.auditing import compare_meters, differing_meters
from services.billing.invoices import due_month
from services.billing.limits import LimitChange, limit_changes, reached_thresholds
from services.billing.metering import (
    MAX_INTERVAL,
    InvalidUsageError,
    UsageKey,
    interval_ids,
    meter_event,
)
from services.billing.meters import DEFAULT, Catalogue, Meter, Source
from services.billing.periods import (
    PeriodError,
    month_name,
    month_period,
    months_between,
    parse_bound,
    parse_range,
    period,
)
from services.billing.pricing import (
    MeterTotal,
    PlanAssignment,
    Price,
    PriceBook,
    PricingError,
    amount_cents,
    price_lines,
    segments,
)
from services.billing.projector import Projector
from shared.events.reconciliation import ParticipantPresumedGone
from tests import billing_script as script
from tests.billing_script import at

SAO_PAULO = ZoneInfo("America/Sao_Paulo")
T = "tcore000001"


def fold(events: list, catalogue: Catalogue = DEFAULT) -> dict[UsageKey, int]:  # type: ignore[type-arg]
    projector = Projector(catalogue)
    for sequence, event in events:
        projector.apply(sequence, event)
    return {
        UsageKey(r.tenant, r.window, r.meter, r.room, r.dispatch): r.quantity
        for r in projector.take_rows()
        if r.quantity
    }


def by_meter(rows: dict[UsageKey, int]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for key, quantity in rows.items():
        totals[key.meter] = totals.get(key.meter, 0) + quantity
    return totals


def numbered(tenant: str = T) -> list:  # type: ignore[type-arg]
    return list(enumerate(script.envelopes(tenant), start=1))


# ---------------------------------------------------------------------------------------------
# Metering


def test_a_usage_report_meters_each_field_in_its_base_unit_in_the_window_of_its_start() -> None:
    event = script.envelopes(T)[3]
    metered = meter_event(DEFAULT, event, 7, {})
    quantities = {d.key.meter: d.quantity for d in metered.deltas}
    assert quantities == {
        "llm_prompt_tokens": 1200,
        "llm_completion_tokens": 300,
        "llm_cached_tokens": 200,
        "stt_audio": 12_500,
        "tts_characters": 450,
        "tts_audio": 9_250,
        "agent_session": 15_000,
    }
    assert {d.key.window for d in metered.deltas} == {at("13:00:00")}
    assert {(d.key.room, d.key.dispatch) for d in metered.deltas} == {
        (script.ROOM, script.DISPATCH)
    }
    assert {(d.first_sequence, d.last_sequence) for d in metered.deltas} == {(7, 7)}


def test_the_final_report_counts_one_session_in_the_window_of_its_end() -> None:
    final = script.envelopes(T)[7]
    deltas = [
        d for d in meter_event(DEFAULT, final, 1, {}).deltas if d.key.meter == "agent_sessions"
    ]
    assert [(d.key.window, d.quantity) for d in deltas] == [(at("13:01:00"), 1)]


@pytest.mark.parametrize(
    "fields",
    [
        {"llm_prompt_tokens": -1},
        {"stt_audio_seconds": float("nan")},
        {"period_end": at("12:00:00")},
    ],
)
def test_impossible_usage_is_rejected(fields: dict[str, object]) -> None:
    base = {
        "dispatch_id": "d",
        "room": "r",
        "role": "x",
        "period_start": at("13:00:00"),
        "period_end": at("13:00:15"),
        **fields,
    }
    event = script.envelopes(T, [script.AgentUsageReported(**base)])[0]  # type: ignore[arg-type]
    with pytest.raises(InvalidUsageError):
        meter_event(DEFAULT, event, 1, {})


def test_the_scripted_consultation_gives_the_hand_computed_totals() -> None:
    rows = fold(numbered())
    assert by_meter(rows) == script.TOTALS
    participant = {k.window: q for k, q in rows.items() if k.meter == "participant_time"}
    assert participant == script.PARTICIPANT_WINDOWS


def test_any_order_and_any_duplicates_give_the_same_rows() -> None:
    events = numbered()
    expected = fold(events)
    rng = random.Random(6)
    for _ in range(25):
        shuffled = events + rng.sample(events, 4)  # some delivered twice
        rng.shuffle(shuffled)
        assert fold(shuffled) == expected


def test_a_stay_split_across_minutes_adds_up_exactly() -> None:
    join = script._joined("PA_x", "10:00:30")
    leave = script.ParticipantLeft(
        room=script.ROOM,
        participant_sid="PA_x",
        identity="i",
        left_at=at("10:02:10") + timedelta(microseconds=123_456),
    )
    rows = fold(list(enumerate(script.envelopes(T, [join, leave]), start=1)))
    assert sorted(rows.values()) == [10_123, 30_000, 60_000]


def test_every_ordering_of_start_end_and_a_later_duplicate_end_converges() -> None:
    # A participant_connection_aborted after participant_left: the latest end wins.
    events = [
        script._joined("PA_y", "10:00:00"),
        script._left("PA_y", "10:01:00"),
        script._left("PA_y", "10:03:30"),
    ]
    for order in itertools.permutations(script.envelopes(T, events)):
        rows = fold(list(enumerate(order, start=1)))
        assert by_meter(rows) == {"participant_time": 210_000}


def test_a_leave_alone_bills_from_the_join_it_names_and_an_egress_end_alone_too() -> None:
    leave = script.ParticipantLeft(
        room="r",
        participant_sid="PA_z",
        identity="i",
        joined_at=at("09:00:00"),
        left_at=at("09:01:00"),
    )
    ended = script.EgressEnded(
        room="r",
        egress_id="EG_z",
        started_at=at("09:00:00"),
        ended_at=at("09:00:30"),
        status="complete",
    )
    rows = fold(list(enumerate(script.envelopes(T, [leave, ended]), start=1)))
    assert by_meter(rows) == {"participant_time": 60_000, "egress_time": 30_000}


def _presumed(sid: str, last_seen: str, joined: str | None = None) -> ParticipantPresumedGone:
    return ParticipantPresumedGone(
        room=script.ROOM,
        room_sid="RM_1",
        participant_sid=sid,
        identity=f"id-{sid}",
        joined_at=at(joined) if joined else None,
        last_seen_at=at(last_seen),
        observed_at=at(last_seen) + timedelta(seconds=31),
    )


def test_a_presumed_leave_closes_the_stay_when_it_was_last_seen() -> None:
    # The participant_left never came: the reconciliation saw the patient last at 10:02:00
    # and found it gone at 10:02:31. Only what the log shows is billed: up to 10:02:00.
    events = [script._joined("PA_p", "10:00:00"), _presumed("PA_p", "10:02:00", "10:00:00")]
    rows = fold(list(enumerate(script.envelopes(T, events), start=1)))
    assert by_meter(rows) == {"participant_time": 120_000}
    # With the join lost too, the presumption names the join as the read model knew it.
    alone = fold(list(enumerate(script.envelopes(T, events[1:]), start=1)))
    assert by_meter(alone) == {"participant_time": 120_000}


def test_a_late_real_leave_replaces_the_presumed_end_in_any_order() -> None:
    # The real leave (10:02:20) is never before the last sighting: it moves the end, once.
    events = [
        script._joined("PA_q", "10:00:00"),
        _presumed("PA_q", "10:02:00", "10:00:00"),
        script._left("PA_q", "10:02:20"),
    ]
    for order in itertools.permutations(script.envelopes(T, events)):
        rows = fold(list(enumerate(order, start=1)))
        assert by_meter(rows) == {"participant_time": 140_000}
    # Back after a presumption (LiveKit listed it again), then presumed gone again later.
    again = [*events[:2], _presumed("PA_q", "10:05:00", "10:00:00")]
    for order in itertools.permutations(script.envelopes(T, again)):
        assert by_meter(fold(list(enumerate(order, start=1)))) == {"participant_time": 300_000}


def test_open_stays_and_agent_or_egress_participants_bill_nothing() -> None:
    events = [
        script._joined("PA_open", "10:00:00"),
        script._joined("PA_bot", "10:00:00", kind="agent"),
        script._left("PA_bot", "10:05:00", kind="agent"),
    ]
    enveloped = script.envelopes(T, events)
    assert fold(list(enumerate(enveloped, start=1))) == {}
    assert interval_ids(DEFAULT, enveloped[1]) == []  # the agent kind is not even tracked


def test_an_implausibly_long_stay_is_not_billed() -> None:
    join = script._joined("PA_long", "00:00:00")
    leave = script.ParticipantLeft(
        room="r",
        participant_sid="PA_long",
        identity="i",
        left_at=at("00:00:00") + MAX_INTERVAL + timedelta(seconds=1),
    )
    assert fold(list(enumerate(script.envelopes(T, [join, leave]), start=1))) == {}


def test_a_max_meter_keeps_the_largest_value_per_window() -> None:
    catalogue = Catalogue(
        (
            Meter(
                id="peak_tts",
                unit="character",
                aggregation="max",
                sources=(
                    Source(
                        type=script.AgentUsageReported.TYPE,
                        time_field="period_start",
                        field="tts_characters",
                    ),
                ),
            ),
        )
    )
    reports = [script._usage("13:00:00", "13:00:15", tts_characters=n) for n in (40, 90, 10)]
    rows = fold(list(enumerate(script.envelopes(T, reports), start=1)), catalogue)
    assert list(rows.values()) == [90]


def test_an_event_counts_once_per_id_and_rejected_ones_are_reported() -> None:
    events = numbered()
    projector = Projector(DEFAULT, keep_inbox=True)
    for sequence, event in events + events[:3]:
        projector.apply(sequence, event)
    bad = script.envelopes(T, [script._usage("13:00:00", "12:00:00", llm_prompt_tokens=1)])[0]
    projector.apply(99, bad)
    projector.undecodable(100)
    stats = projector.stats
    assert (stats.applied, stats.duplicates, stats.rejected, stats.undecodable) == (12, 3, 1, 1)
    assert (stats.first_sequence, stats.last_sequence) == (1, 100)
    assert projector.inbox is not None and len(projector.inbox) == 12


def test_a_replay_of_a_period_keeps_only_its_windows() -> None:
    projector = Projector(DEFAULT, period=period(at("13:01:00"), at("13:02:00")))
    for sequence, event in numbered():
        projector.apply(sequence, event)
    assert {r.window for r in projector.take_rows()} == {at("13:01:00")}


# ---------------------------------------------------------------------------------------------
# Periods


def test_billing_months_follow_the_billing_time_zone() -> None:
    january = month_period("2026-01", SAO_PAULO)
    assert january.start == datetime(2026, 1, 1, 3, tzinfo=UTC)
    assert january.end == datetime(2026, 2, 1, 3, tzinfo=UTC)
    assert month_name(datetime(2026, 2, 1, 2, 59, tzinfo=UTC), SAO_PAULO) == "2026-01"
    assert month_period("2025-12", SAO_PAULO).end == datetime(2026, 1, 1, 3, tzinfo=UTC)
    with pytest.raises(PeriodError):
        month_period("2026-13", SAO_PAULO)


def test_range_bounds_dates_are_whole_days_and_instants_are_exact() -> None:
    days = parse_range("2026-01-01", "2026-01-31", SAO_PAULO)
    assert days == month_period("2026-01", SAO_PAULO)
    assert parse_bound("2026-01-05T10:00:00Z", SAO_PAULO, end=True) == datetime(
        2026, 1, 5, 10, tzinfo=UTC
    )
    with pytest.raises(PeriodError):
        parse_range("2026-02-01", "2026-01-01", SAO_PAULO)
    with pytest.raises(PeriodError):
        parse_bound("yesterday", SAO_PAULO, end=False)
    names = [
        name
        for name, _ in months_between(parse_range("2025-12-15", "2026-02-01", SAO_PAULO), SAO_PAULO)
    ]
    assert names == ["2025-12", "2026-01", "2026-02"]


def test_invoices_are_due_for_the_last_month_once_its_grace_is_over() -> None:
    grace = timedelta(days=2)
    assert due_month(datetime(2026, 2, 3, 3, 1, tzinfo=UTC), grace, SAO_PAULO) == "2026-01"
    assert due_month(datetime(2026, 2, 2, 12, tzinfo=UTC), grace, SAO_PAULO) == "2025-12"


# ---------------------------------------------------------------------------------------------
# Pricing


def test_amounts_are_integer_cents_rounded_half_away_from_zero() -> None:
    assert amount_cents(315_000, Price(2, 60_000)) == 11  # 10.5
    assert amount_cents(314_999, Price(2, 60_000)) == 10
    assert amount_cents(2500, Price(150, 1_000_000)) == 0
    assert amount_cents(-315_000, Price(2, 60_000)) == -11
    assert amount_cents(10**15, Price(600, 1_000_000)) == 600_000_000_000  # no float anywhere


def book(plan: str, version: int, since: datetime, **cents: int) -> PriceBook:
    return PriceBook(
        plan=plan,
        version=version,
        effective_from=since,
        prices={m: Price(c, 60_000) for m, c in cents.items()},
    )


def test_a_version_effective_mid_month_splits_the_month_and_lines_name_versions() -> None:
    month = month_period("2026-03", SAO_PAULO)
    books = [
        book("standard", 1, datetime(2000, 1, 1, tzinfo=UTC), egress_time=8),
        book("standard", 2, month.start + timedelta(days=10), egress_time=10),
    ]
    found = segments(month, [], books)
    assert [(s.start, s.end, s.book.version) for s in found] == [
        (month.start, month.start + timedelta(days=10), 1),
        (month.start + timedelta(days=10), month.end, 2),
    ]
    lines = price_lines(
        [
            (found[0], {"egress_time": MeterTotal(600_000, 3, 9)}),
            (found[1], {"egress_time": MeterTotal(120_000, 12, 20)}),
        ],
        DEFAULT,
    )
    assert [(line.version, line.quantity, line.amount_cents) for line in lines] == [
        (1, 600_000, 80),
        (2, 120_000, 20),
    ]
    assert [(line.first_sequence, line.last_sequence) for line in lines] == [(3, 9), (12, 20)]


def test_plans_versions_what_if_and_a_gap_in_price_books() -> None:
    month = month_period("2026-03", SAO_PAULO)
    books = [
        book("standard", 1, datetime(2000, 1, 1, tzinfo=UTC)),
        book("clinic", 1, datetime(2000, 1, 1, tzinfo=UTC)),
        book("clinic", 2, datetime(2000, 1, 1, tzinfo=UTC)),
    ]  # same date: higher wins
    plans = [PlanAssignment("clinic", month.start + timedelta(days=5))]
    found = segments(month, plans, books)
    assert [s.book.label for s in found] == ["standard@1", "clinic@2"]
    assert [s.book.label for s in segments(month, plans, books, what_if=books[0])] == ["standard@1"]
    with pytest.raises(PricingError):
        segments(month, [PlanAssignment("nowhere", month.start)], books)


def test_a_meter_without_a_price_shows_at_zero_and_empty_meters_have_no_line() -> None:
    month = month_period("2026-03", SAO_PAULO)
    found = segments(month, [], [book("standard", 1, datetime(2000, 1, 1, tzinfo=UTC))])
    lines = price_lines(
        [(found[0], {"video": MeterTotal(60_000, 1, 1), "avatar": MeterTotal(0, 1, 1)})], DEFAULT
    )
    assert [(line.meter, line.amount_cents, line.unit) for line in lines] == [
        ("video", 0, "millisecond")
    ]


# ---------------------------------------------------------------------------------------------
# Limits and audits


def test_limit_thresholds_are_announced_once_and_cleared_when_the_cap_moves() -> None:
    assert reached_thresholds(79, 100) == frozenset()
    assert reached_thresholds(80, 100) == {80}
    assert reached_thresholds(100, 100) == {80, 100}
    assert limit_changes(100, 100, set()) == [LimitChange(80, True), LimitChange(100, True)]
    assert limit_changes(120, 100, {80, 100}) == []
    assert limit_changes(120, 140, {80, 100}) == [LimitChange(100, False)]
    assert limit_changes(120, None, {80}) == [LimitChange(80, False)]


def test_an_audit_reports_each_meter_that_differs_to_the_cent() -> None:
    replayed = {"participant_time": MeterTotal(315_000, 1, 9), "egress_time": MeterTotal(1, 2, 2)}
    live = {"participant_time": MeterTotal(375_000, 1, 9), "egress_time": MeterTotal(1, 2, 2)}
    month = month_period("2026-03", SAO_PAULO)
    found = segments(
        month, [], [book("standard", 1, datetime(2000, 1, 1, tzinfo=UTC), participant_time=2)]
    )
    meters = compare_meters(
        replayed,
        live,
        price_lines([(found[0], replayed)], DEFAULT),
        price_lines([(found[0], live)], DEFAULT),
        DEFAULT,
    )
    participant = next(m for m in meters if m.meter == "participant_time")
    assert (participant.quantity_difference, participant.cents_difference) == (-60_000, -2)
    assert differing_meters(meters, []) == ["participant_time"]


# ---------------------------------------------------------------------------------------------
# What billing reads


def test_billing_reads_only_business_stream_events() -> None:
    from services.billing.consumers import USAGE_PROJECTION
    from services.billing.meters import METERED_EVENTS
    from shared import subjects
    from shared.events import EVENTS_STREAM

    assert {event.STREAM for event in METERED_EVENTS} == {EVENTS_STREAM}
    assert USAGE_PROJECTION.stream == "MEDIAI_EVENTS"
    filters = [subjects.any_version_filter(e, "t1") for e in METERED_EVENTS]
    assert "mediai.events.agent.usage_reported.*.t1.*" in filters
    assert all(f.startswith("mediai.events.") for f in filters)
    types = {source.type for meter in DEFAULT.meters.values() for source in meter.sources}
    assert types == {event.TYPE for event in METERED_EVENTS}
