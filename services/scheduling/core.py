"""Scheduling decisions, free of I/O and clocks: weekly schedules, their slots, what may be booked.

A doctor's schedule is a weekly pattern (windows of local wall-clock time per weekday) cut into
slots of one length, in the doctor's time zone. Slots are computed, never stored: a booked
appointment is the only row, and Postgres refuses two booked appointments of one doctor that
overlap, so "is this slot free" has one source of truth.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Iterator, Sequence
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from shared.naming import whole

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_TIMEZONE = "America/Sao_Paulo"
# How far ahead slots are offered and searched: further than a clinic plans, short enough that
# a search over many doctors stays a few thousand slot computations.
HORIZON = timedelta(days=90)
# [0-9], not \d: in Python \d also takes other scripts' digits, in JavaScript it does not.
CLOCK = re.compile(whole(r"([01][0-9]|2[0-3]):[0-5][0-9]"))


class SchedulingError(Exception):
    """A request scheduling refuses; ``code`` is the stable code callers see."""

    code = "invalid_request"


class InvalidRequestError(SchedulingError):
    code = "invalid_request"


class DoctorNotFoundError(SchedulingError):
    code = "doctor_not_found"


class AppointmentNotFoundError(SchedulingError):
    code = "appointment_not_found"


class SlotTakenError(SchedulingError):
    code = "slot_taken"


class SlotUnavailableError(SchedulingError):
    code = "slot_unavailable"


class AppointmentCancelledError(SchedulingError):
    code = "appointment_cancelled"


class Window(msgspec.Struct, frozen=True, kw_only=True):
    """Local wall-clock hours of one weekday, ``start`` and ``end`` as ``HH:MM``."""

    day: str
    start: str
    end: str


class Schedule(msgspec.Struct, frozen=True, kw_only=True):
    timezone: str = DEFAULT_TIMEZONE
    slot_minutes: int = 30
    weekly: tuple[Window, ...] = ()

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def slot_length(self) -> timedelta:
        return timedelta(minutes=self.slot_minutes)


class Slot(msgspec.Struct, frozen=True, kw_only=True, order=True):
    starts_at: datetime
    ends_at: datetime

    def overlaps(self, other: Slot) -> bool:
        return self.starts_at < other.ends_at and other.starts_at < self.ends_at


def _clock(text: str) -> time:
    if not CLOCK.fullmatch(text):
        raise InvalidRequestError(f"{text!r} is not a time of day like 08:00 or 17:30")
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def validate_schedule(schedule: Schedule) -> Schedule:
    """The schedule if it is usable; InvalidRequestError naming the first problem otherwise."""
    try:
        ZoneInfo(schedule.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequestError(f"{schedule.timezone!r} is not an IANA time zone") from None
    if not 5 <= schedule.slot_minutes <= 480:
        raise InvalidRequestError("slotMinutes must be between 5 and 480")
    by_day: dict[str, list[tuple[time, time]]] = {}
    for window in schedule.weekly:
        if window.day not in WEEKDAYS:
            raise InvalidRequestError(f"{window.day!r} is not one of {', '.join(WEEKDAYS)}")
        start, end = _clock(window.start), _clock(window.end)
        minutes = (end.hour * 60 + end.minute) - (start.hour * 60 + start.minute)
        if minutes < schedule.slot_minutes:
            raise InvalidRequestError(
                f"{window.day} {window.start}-{window.end} is shorter than one slot"
            )
        by_day.setdefault(window.day, []).append((start, end))
    for day, windows in by_day.items():
        windows.sort()
        for (_, end), (start, _) in itertools.pairwise(windows):
            if start < end:
                raise InvalidRequestError(f"two windows of {day} overlap")
    return schedule


def slots_on(schedule: Schedule, day: date) -> list[Slot]:
    """Every slot of ``day`` (a date in the doctor's time zone), in order."""
    zone, length = schedule.zone, schedule.slot_length
    slots: list[Slot] = []
    for window in schedule.weekly:
        if window.day != WEEKDAYS[day.weekday()]:
            continue
        start = datetime.combine(day, _clock(window.start), tzinfo=zone)
        end = datetime.combine(day, _clock(window.end), tzinfo=zone)
        # Wall-clock arithmetic: a 09:00-12:00 window keeps its hours across a DST change.
        while start + length <= end:
            slots.append(Slot(starts_at=start, ends_at=start + length))
            start += length
    return sorted(slots)


def _days(schedule: Schedule, after: datetime, until: datetime) -> Iterator[date]:
    day, last = after.astimezone(schedule.zone).date(), until.astimezone(schedule.zone).date()
    while day <= last:
        yield day
        day += timedelta(days=1)


def free_slots(
    schedule: Schedule,
    booked: Sequence[Slot],
    *,
    after: datetime,
    until: datetime,
    limit: int,
) -> list[Slot]:
    """Up to ``limit`` slots starting in ``[after, until)`` that overlap no booked slot."""
    found: list[Slot] = []
    if not schedule.weekly or limit < 1:
        return found
    for day in _days(schedule, after, until):
        for slot in slots_on(schedule, day):
            if slot.starts_at < after or slot.starts_at >= until:
                continue
            if any(slot.overlaps(taken) for taken in booked):
                continue
            found.append(slot)
            if len(found) >= limit:
                return found
    return found


def next_free_slot(
    schedule: Schedule, booked: Sequence[Slot], *, after: datetime, until: datetime
) -> Slot | None:
    slots = free_slots(schedule, booked, after=after, until=until, limit=1)
    return slots[0] if slots else None


def offered_slot(schedule: Schedule, starts_at: datetime, *, now: datetime) -> Slot:
    """The slot of the schedule starting exactly at ``starts_at``, if it may still be booked."""
    if starts_at.tzinfo is None:
        raise InvalidRequestError("startsAt needs a time zone offset (e.g. -03:00 or Z)")
    if starts_at <= now:
        raise SlotUnavailableError("that time has already passed")
    if starts_at > now + HORIZON:
        raise SlotUnavailableError(f"appointments open at most {HORIZON.days} days ahead")
    for slot in slots_on(schedule, starts_at.astimezone(schedule.zone).date()):
        if slot.starts_at == starts_at:
            return slot
    raise SlotUnavailableError("the doctor has no slot starting at that time")


def search_window(
    now: datetime, available_from: datetime | None, available_until: datetime | None
) -> tuple[datetime, datetime]:
    """The ``[after, until)`` in which to look for free slots, never in the past or past the
    horizon."""
    after = max(now, available_from) if available_from else now
    until = min(available_until, now + HORIZON) if available_until else now + HORIZON
    if until <= after:
        raise InvalidRequestError("the availability window is empty or in the past")
    return after, until


def fold(text: str) -> str:
    """Text for matching: lower case, no accents, single spaces ("São  Paulo" -> "sao paulo")."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.casefold().split())


def words(text: str | None) -> list[str]:
    """The folded words of a search filter; a match must contain every one."""
    return fold(text).split() if text else []
