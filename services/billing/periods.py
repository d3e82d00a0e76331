"""Billing months and days: calendar periods in the billing time zone, as UTC instants."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from services.billing.metering import utc

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


class PeriodError(ValueError):
    """A month, date or range that cannot be read; the message says what was expected."""


class Period(NamedTuple):
    """``[start, end)`` as UTC instants."""

    start: datetime
    end: datetime


# A period's bound as the OpenAPI document states it: a date, or an ISO 8601 instant.
BOUND = {
    "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?(?!\n)$"
}


def period(start: datetime, end: datetime) -> Period:
    if end <= start:
        raise PeriodError("the end of a period must be after its start")
    return Period(start, end)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


def month_name(moment: datetime, zone: ZoneInfo) -> str:
    """``YYYY-MM`` of the billing month holding ``moment``."""
    return utc(moment).astimezone(zone).strftime("%Y-%m")


def month_period(month: str, zone: ZoneInfo) -> Period:
    """The instants a billing month (``YYYY-MM``) spans."""
    match = _MONTH.match(month)
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise PeriodError(f"{month!r} is not a month like 2026-01")
    year, number = int(match.group(1)), int(match.group(2))
    try:
        following = date(year + number // 12, number % 12 + 1, 1)
        return period(_midnight(date(year, number, 1), zone), _midnight(following, zone))
    except (ValueError, OverflowError):
        raise PeriodError(f"{month!r} is out of range") from None


def month_of(moment: datetime, zone: ZoneInfo) -> Period:
    return month_period(month_name(moment, zone), zone)


def months_between(period: Period, zone: ZoneInfo) -> list[tuple[str, Period]]:
    """Every billing month that overlaps ``period``, in order."""
    months: list[tuple[str, Period]] = []
    name = month_name(period.start, zone)
    while True:
        bounds = month_period(name, zone)
        if bounds.start >= period.end:
            return months
        months.append((name, bounds))
        name = month_name(bounds.end, zone)


def parse_bound(text: str, zone: ZoneInfo, *, end: bool) -> datetime:
    """A range bound: a date is a whole day in the billing time zone (an end date includes its
    day), a datetime is an instant (an end instant is excluded)."""
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return _midnight(day + timedelta(days=1) if end else day, zone)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return utc(moment) if moment.tzinfo else moment.replace(tzinfo=zone).astimezone(UTC)
    except (ValueError, OverflowError):
        raise PeriodError(f"{text!r} is not a date (2026-01-31) or an ISO 8601 instant") from None


def parse_range(start: str, end: str, zone: ZoneInfo) -> Period:
    return period(parse_bound(start, zone, end=False), parse_bound(end, zone, end=True))
