"""Metering, free of I/O and clocks: an event (and the intervals it touches) → usage deltas.

Usage is kept per (tenant, one-minute window, meter, room, dispatch). The window comes from the
event's own times (``period_start``, ``joined_at``, …), never from a clock or from when it was
delivered, so replaying the same events in any order gives the same rows. Durations are split
at minute boundaries in integer milliseconds, so the pieces always add up to the whole.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from itertools import compress
from typing import Any, Literal, NamedTuple, NoReturn

import msgspec

from services.billing.meters import Catalogue, Source
from shared.events import Envelope

MINUTE_MS = 60_000
# An interval longer than this is an anomaly (a lost leave event matched to a later one), not
# usage: it is kept as state but bills nothing. Documented in docs/billing.md.
MAX_INTERVAL = timedelta(days=31)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_MINUTE = timedelta(milliseconds=MINUTE_MS)


class InvalidUsageError(ValueError):
    """An event no meter can accept (negative or non-finite quantities, an inverted period)."""


class UsageKey(NamedTuple):
    tenant: str
    window: datetime
    meter: str
    room: str
    dispatch: str


class Delta(NamedTuple):
    """A change of one usage row; ``op`` ``max`` rows keep the largest value instead of adding."""

    key: UsageKey
    quantity: int
    first_sequence: int
    last_sequence: int
    op: Literal["sum", "max"] = "sum"


class IntervalId(NamedTuple):
    tenant: str
    meter: str
    key: str


class Interval(msgspec.Struct, frozen=True, kw_only=True):
    """What is known of one duration (a participant's stay, an egress): the earliest start and
    the latest end seen, and the stream sequences of the events that gave them."""

    tenant: str
    meter: str
    key: str
    room: str
    started_at: datetime | None = None
    ended_at: datetime | None = None
    start_sequence: int = 0
    end_sequence: int = 0

    @property
    def id(self) -> IntervalId:
        return IntervalId(self.tenant, self.meter, self.key)


class Metered(NamedTuple):
    deltas: list[Delta]
    intervals: list[Interval]  # the intervals this event changed, as they are now


def utc(moment: datetime) -> datetime:
    """Event times are UTC; a time without a zone is read as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def window_of(moment: datetime) -> datetime:
    """The one-minute window holding ``moment``."""
    if moment.tzinfo is not UTC:  # decoded times ending in Z are already in UTC
        moment = utc(moment)
    # The constructor with positional arguments: a third of what ``replace`` costs.
    return datetime(moment.year, moment.month, moment.day, moment.hour, moment.minute, 0, 0, UTC)


def _epoch_ms(moment: datetime) -> int:
    return (utc(moment) - _EPOCH) // _MS


def _matches(data: Any, source: Source) -> bool:
    return all(getattr(data, name, None) in allowed for name, allowed in source.where.items())


def interval_ids(catalogue: Catalogue, event: Envelope) -> list[IntervalId]:
    """The intervals an event may change (to load them before ``meter_event``)."""
    if event.type not in catalogue.interval_types:
        return []
    data = event.data
    return [
        IntervalId(event.tenant, meter.id, str(getattr(data, source.key_field)))
        for meter, source in catalogue.by_type.get(event.type, ())
        if meter.aggregation == "duration" and _matches(data, source)
    ]


# (window, meter, quantity, whether the row keeps the largest value instead of adding)
Count = tuple[datetime, str, int, bool]


def usage_counts(catalogue: Catalogue, event: Envelope) -> list[Count]:
    """What an event adds to its ``sum``, ``count`` and ``max`` meters (durations are
    ``meter_event``'s), zero quantities left out. Raises ``InvalidUsageError`` for an event that
    can never be metered.

    Replays run this for millions of events (a usage report feeds a dozen meters, most of them
    zero), so it is written for speed: the fields are read all at once and the zeros dropped
    in C (``attrgetter``, ``compress``), each window is computed once per event, and the counts
    are plain tuples.
    """
    data = event.data
    _validate(data)
    reading = catalogue.readings.get(event.type)
    if reading is None:
        return []
    counts: list[Count] = []
    windows: dict[str, datetime] = {}
    if reading.values is not None:
        values = reading.values(data)
        nonzero = zip(compress(reading.plain, values), compress(values, values), strict=False)
        for counter, value in nonzero:
            if not 0 < value < math.inf:  # negative, NaN or infinite (zeros are left out)
                _invalid(counter.field, value)
            quantity: int = round(value * counter.scale)
            if quantity:
                time_field = counter.time_field
                window = windows.get(time_field)
                if window is None:
                    window = windows[time_field] = window_of(getattr(data, time_field))
                counts.append((window, counter.meter, quantity, counter.is_max))
    for meter, field, scale, time_field, where, is_max in reading.others:
        if where and not all(getattr(data, name, None) in allowed for name, allowed in where):
            continue
        if field:
            value = getattr(data, field)
            if not value:
                continue
            if not 0 < value < math.inf:
                _invalid(field, value)
            quantity = round(value * scale)
            if not quantity:
                continue
        else:
            quantity = 1
        window = windows.get(time_field)
        if window is None:
            window = windows[time_field] = window_of(getattr(data, time_field))
        counts.append((window, meter, quantity, is_max))
    return counts


def _invalid(field: str, value: Any) -> NoReturn:
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidUsageError(f"{field} is not a finite number")
    raise InvalidUsageError(f"{field} is negative")


def meter_event(
    catalogue: Catalogue,
    event: Envelope,
    sequence: int,
    intervals: Mapping[IntervalId, Interval],
) -> Metered:
    """The usage deltas of one event and the intervals it changed.

    ``intervals`` holds the current state of the ones ``interval_ids`` named (missing = none
    seen yet). Raises ``InvalidUsageError`` for an event that can never be metered.
    """
    tenant, data = event.tenant, event.data
    room = str(getattr(data, "room", ""))
    dispatch = str(getattr(data, "dispatch_id", ""))
    deltas = [
        Delta(
            UsageKey(tenant, window, meter, room, dispatch),
            quantity,
            sequence,
            sequence,
            "max" if is_max else "sum",
        )
        for window, meter, quantity, is_max in usage_counts(catalogue, event)
    ]
    changed: list[Interval] = []
    if event.type not in catalogue.interval_types:
        return Metered(deltas, changed)
    for meter, source in catalogue.by_type.get(event.type, ()):
        if meter.aggregation != "duration" or (source.where and not _matches(data, source)):
            continue
        ident = IntervalId(tenant, meter.id, str(getattr(data, source.key_field)))
        before = intervals.get(ident)
        after = observe(before, ident, room, data, source, sequence)
        if after != before:
            changed.append(after)
            deltas += interval_deltas(before, after, sequence)
    return Metered(deltas, changed)


def _validate(data: Any) -> None:
    start, end = getattr(data, "period_start", None), getattr(data, "period_end", None)
    if start is None or end is None:
        return
    # Times with zones compare as instants; one without is read as UTC first.
    aware = start.tzinfo is not None and end.tzinfo is not None
    if (end < start) if aware else (utc(end) < utc(start)):
        raise InvalidUsageError("period_end is before period_start")


def observe(
    before: Interval | None,
    ident: IntervalId,
    room: str,
    data: Any,
    source: Source,
    sequence: int,
) -> Interval:
    """The interval after seeing one start and/or end: earliest start, latest end (ties go to
    the lower sequence), so the result does not depend on the order events arrive in."""
    state = before or Interval(tenant=ident.tenant, meter=ident.meter, key=ident.key, room=room)
    start = getattr(data, source.start_field, None) if source.start_field else None
    end = getattr(data, source.end_field, None) if source.end_field else None
    if start is not None:
        start = utc(start)
        if state.started_at is None or (start, sequence) < (state.started_at, state.start_sequence):
            # The room of the start wins: it is where the interval began.
            state = msgspec.structs.replace(
                state, started_at=start, start_sequence=sequence, room=room
            )
    if end is not None:
        end = utc(end)
        if state.ended_at is None or (end, -sequence) > (state.ended_at, -state.end_sequence):
            state = msgspec.structs.replace(state, ended_at=end, end_sequence=sequence)
    return state


def interval_pieces(interval: Interval) -> dict[UsageKey, int]:
    """A closed interval's milliseconds per minute window; nothing while it is open."""
    start, end = interval.started_at, interval.ended_at
    if start is None or end is None or end <= start or end - start > MAX_INTERVAL:
        return {}
    tenant, meter, room = interval.tenant, interval.meter, interval.room
    cursor, end_ms = _epoch_ms(start), _epoch_ms(end)
    window_ms = cursor - cursor % MINUTE_MS
    window = _EPOCH + window_ms * _MS
    pieces: dict[UsageKey, int] = {}
    # Replays meter every stay's minutes: each window is the previous one plus a minute.
    while cursor < end_ms:
        window_ms += MINUTE_MS
        until = window_ms if window_ms < end_ms else end_ms
        pieces[UsageKey(tenant, window, meter, room, "")] = until - cursor
        cursor = until
        window += _MINUTE
    return pieces


def interval_deltas(before: Interval | None, after: Interval, sequence: int) -> list[Delta]:
    """What replacing ``before`` by ``after`` changes in the usage rows (a late start or end
    takes back the pieces it supersedes)."""
    old = interval_pieces(before) if before is not None else {}
    new = interval_pieces(after)
    sequences = [s for s in (after.start_sequence, after.end_sequence, sequence) if s]
    first, last = min(sequences), max(sequences)
    deltas = []
    for key in old.keys() | new.keys():
        change = new.get(key, 0) - old.get(key, 0)
        if change:
            deltas.append(Delta(key, change, first, last))
    deltas.sort()
    return deltas
