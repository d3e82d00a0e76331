"""The usage projection folded in memory, for replays (full rebuilds and audits).

It applies the same metering functions as the live consumer, with the same rules: an event id
counts once, an event no meter can accept is skipped (the live consumer dead-letters it). Rows
accumulate until ``take_rows`` hands them to the writer, so memory stays bounded by a batch;
interval states stay for the whole replay (a stay may end much later in the stream).
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import msgspec

from services.billing.metering import (
    Interval,
    IntervalId,
    InvalidUsageError,
    UsageKey,
    interval_ids,
    meter_event,
)
from services.billing.meters import Catalogue
from services.billing.periods import Period
from shared.events import Envelope


class ReplayStats(msgspec.Struct, kw_only=True):
    """What a replay read: events applied, seen twice, rejected, unreadable; the sequences."""

    events: int = 0
    applied: int = 0
    duplicates: int = 0
    rejected: int = 0
    undecodable: int = 0
    first_sequence: int = 0
    last_sequence: int = 0


class Row(NamedTuple):
    tenant: str
    window: datetime
    meter: str
    room: str
    dispatch: str
    quantity: int
    first_sequence: int
    last_sequence: int


class Projector:
    """Folds events into usage rows; ``period`` keeps only windows inside it (audits)."""

    def __init__(
        self, catalogue: Catalogue, *, period: Period | None = None, keep_inbox: bool = False
    ) -> None:
        self.catalogue = catalogue
        self.period = period
        self.intervals: dict[IntervalId, Interval] = {}
        self.rows: dict[UsageKey, list[int]] = {}
        self.seen: set[str] = set()
        self.inbox: list[tuple[str, int]] | None = [] if keep_inbox else None
        self.stats = ReplayStats()

    def _read(self, sequence: int) -> None:
        stats = self.stats
        stats.events += 1
        stats.first_sequence = stats.first_sequence or sequence
        stats.last_sequence = max(stats.last_sequence, sequence)

    def undecodable(self, sequence: int) -> None:
        self._read(sequence)
        self.stats.undecodable += 1

    def apply(self, sequence: int, event: Envelope) -> None:
        # Replays run this for millions of events: plain comparisons rather than min/max calls,
        # and no interval lookup for the types that open or close none.
        stats = self.stats
        stats.events += 1
        if not stats.first_sequence:
            stats.first_sequence = sequence
        if sequence > stats.last_sequence:
            stats.last_sequence = sequence
        event_id = event.id
        if event_id in self.seen:
            stats.duplicates += 1
            return
        catalogue = self.catalogue
        known = (
            {i: self.intervals[i] for i in interval_ids(catalogue, event) if i in self.intervals}
            if event.type in catalogue.interval_types
            else {}
        )
        try:
            metered = meter_event(catalogue, event, sequence, known)
        except InvalidUsageError:
            # Not seen: the live consumer dead-letters it, so its id is not in the inbox either.
            stats.rejected += 1
            return
        self.seen.add(event_id)
        if self.inbox is not None:
            self.inbox.append((event_id, sequence))
        stats.applied += 1
        for interval in metered.intervals:
            self.intervals[interval.id] = interval
        period, rows = self.period, self.rows
        for key, quantity, first, last, op in metered.deltas:
            if period is not None and not period.start <= key.window < period.end:
                continue
            row = rows.get(key)
            if row is None:
                rows[key] = [quantity, first, last]
                continue
            if op != "max":
                row[0] += quantity
            elif quantity > row[0]:
                row[0] = quantity
            if first < row[1]:
                row[1] = first
            if last > row[2]:
                row[2] = last

    def take_rows(self) -> list[Row]:
        """The rows accumulated since the last call (each key once), and forget them."""
        rows = [Row(*key, *values) for key, values in self.rows.items()]
        self.rows = {}
        return rows
