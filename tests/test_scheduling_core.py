"""Scheduling's pure core: weekly schedules, slots, what may be booked, search folding."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.scheduling import core
from services.scheduling.core import Schedule, Slot, Window

SP = ZoneInfo("America/Sao_Paulo")
# Monday 2 March 2026, 08:00 in São Paulo (UTC-3, no DST since 2019).
MONDAY_8 = datetime(2026, 3, 2, 8, 0, tzinfo=SP)
SCHEDULE = Schedule(
    timezone="America/Sao_Paulo",
    slot_minutes=30,
    weekly=(
        Window(day="mon", start="09:00", end="11:00"),
        Window(day="mon", start="14:00", end="15:00"),
        Window(day="wed", start="09:00", end="10:00"),
    ),
)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=SP)


def test_a_day_is_cut_into_slots_of_the_schedules_length() -> None:
    slots = core.slots_on(SCHEDULE, date(2026, 3, 2))
    assert [s.starts_at.astimezone(SP).strftime("%H:%M") for s in slots] == [
        "09:00",
        "09:30",
        "10:00",
        "10:30",
        "14:00",
        "14:30",
    ]
    assert all(s.ends_at - s.starts_at == timedelta(minutes=30) for s in slots)
    assert core.slots_on(SCHEDULE, date(2026, 3, 3)) == []  # no Tuesday hours


def test_a_window_that_does_not_divide_evenly_drops_the_last_partial_slot() -> None:
    schedule = Schedule(slot_minutes=40, weekly=(Window(day="mon", start="09:00", end="11:00"),))
    starts = [s.starts_at.strftime("%H:%M") for s in core.slots_on(schedule, date(2026, 3, 2))]
    assert starts == ["09:00", "09:40", "10:20"]


def test_free_slots_skip_booked_ones_and_the_past() -> None:
    booked = [Slot(starts_at=at(2, 9, 30), ends_at=at(2, 10))]
    free = core.free_slots(SCHEDULE, booked, after=at(2, 9, 10), until=at(5, 0), limit=10)
    assert [s.starts_at for s in free] == [
        at(2, 10),
        at(2, 10, 30),
        at(2, 14),
        at(2, 14, 30),
        at(4, 9),
        at(4, 9, 30),
    ]


def test_a_longer_booking_from_an_older_schedule_blocks_every_slot_it_overlaps() -> None:
    booked = [Slot(starts_at=at(2, 9, 15), ends_at=at(2, 10, 15))]
    free = core.free_slots(SCHEDULE, booked, after=MONDAY_8, until=at(3, 0), limit=10)
    assert [s.starts_at for s in free] == [at(2, 10, 30), at(2, 14), at(2, 14, 30)]


def test_free_slots_stop_at_the_limit_and_at_until() -> None:
    assert len(core.free_slots(SCHEDULE, [], after=MONDAY_8, until=at(30, 0), limit=3)) == 3
    assert core.free_slots(SCHEDULE, [], after=MONDAY_8, until=at(2, 9, 30), limit=9) == [
        Slot(starts_at=at(2, 9), ends_at=at(2, 9, 30))
    ]
    assert core.free_slots(Schedule(), [], after=MONDAY_8, until=at(30, 0), limit=5) == []


def test_next_free_slot_is_the_first_free_one_or_none() -> None:
    assert core.next_free_slot(SCHEDULE, [], after=at(2, 15), until=at(9, 0)) == Slot(
        starts_at=at(4, 9), ends_at=at(4, 9, 30)
    )
    assert core.next_free_slot(SCHEDULE, [], after=at(4, 10), until=at(9, 0)) is None


def test_only_an_exact_future_slot_start_may_be_booked() -> None:
    assert core.offered_slot(SCHEDULE, at(2, 10, 30), now=MONDAY_8).ends_at == at(2, 11)
    # The same instant written in UTC is the same slot.
    in_utc = at(2, 14).astimezone(UTC)
    assert core.offered_slot(SCHEDULE, in_utc, now=MONDAY_8).starts_at == at(2, 14)
    with pytest.raises(core.SlotUnavailableError, match="no slot"):
        core.offered_slot(SCHEDULE, at(2, 9, 15), now=MONDAY_8)  # between slots
    with pytest.raises(core.SlotUnavailableError, match="no slot"):
        core.offered_slot(SCHEDULE, at(3, 9), now=MONDAY_8)  # a day without hours
    with pytest.raises(core.SlotUnavailableError, match="passed"):
        core.offered_slot(SCHEDULE, at(2, 9), now=at(2, 9, 1))
    with pytest.raises(core.SlotUnavailableError, match="days ahead"):
        core.offered_slot(SCHEDULE, at(2, 9) + timedelta(weeks=52), now=MONDAY_8)
    with pytest.raises(core.InvalidRequestError, match="offset"):
        core.offered_slot(SCHEDULE, datetime(2026, 3, 2, 9), now=MONDAY_8)


def test_slots_follow_local_wall_clock_across_a_dst_change() -> None:
    # New York moves to summer time on 8 March 2026: 09:00 stays 09:00 local.
    schedule = Schedule(
        timezone="America/New_York", weekly=(Window(day="fri", start="09:00", end="09:30"),)
    )
    before = core.slots_on(schedule, date(2026, 3, 6))[0].starts_at.astimezone(UTC)
    after = core.slots_on(schedule, date(2026, 3, 13))[0].starts_at.astimezone(UTC)
    assert (before.hour, after.hour) == (14, 13)


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [
        (Schedule(timezone="Mars/Olympus"), "time zone"),
        (Schedule(slot_minutes=2), "between 5 and 480"),
        (Schedule(weekly=(Window(day="seg", start="09:00", end="10:00"),)), "not one of"),
        (Schedule(weekly=(Window(day="mon", start="9h", end="10:00"),)), "time of day"),
        (Schedule(weekly=(Window(day="mon", start="10:00", end="10:15"),)), "shorter than one"),
        (Schedule(weekly=(Window(day="mon", start="11:00", end="10:00"),)), "shorter than one"),
        (
            Schedule(
                weekly=(
                    Window(day="mon", start="09:00", end="11:00"),
                    Window(day="mon", start="10:30", end="12:00"),
                )
            ),
            "overlap",
        ),
    ],
)
def test_unusable_schedules_are_refused_with_the_reason(schedule: Schedule, problem: str) -> None:
    with pytest.raises(core.InvalidRequestError, match=problem):
        core.validate_schedule(schedule)


def test_a_good_schedule_passes_validation() -> None:
    assert core.validate_schedule(SCHEDULE) is SCHEDULE


def test_search_window_is_never_in_the_past_nor_past_the_horizon() -> None:
    now = MONDAY_8
    assert core.search_window(now, None, None) == (now, now + core.HORIZON)
    assert core.search_window(now, now - timedelta(days=3), at(9, 0)) == (now, at(9, 0))
    with pytest.raises(core.InvalidRequestError, match="empty"):
        core.search_window(now, None, now - timedelta(hours=1))


def test_search_text_is_folded_for_case_and_accents() -> None:
    assert core.fold("  São   PAULO ") == "sao paulo"
    assert core.fold("Clínica Médica") == "clinica medica"
    assert core.words("Ana  Lúcia") == ["ana", "lucia"]
    assert core.words(None) == []
