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
    interval_ids,
    meter_event,
    usage_counts,
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


# Rows are held per (tenant, window, room, dispatch), then per meter: a usage report feeds a
# dozen meters in one window, so the outer key is built and looked up once per event.
GroupKey = tuple[str, datetime, str, str]
Cells = dict[str, list[int]]  # meter → [quantity, first sequence, last sequence]


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
        self.rows: dict[GroupKey, Cells] = {}
        self.held = 0  # rows held (cells), for the writer to flush
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
        # plain tuples, one group lookup per window, and the generic metering (``meter_event``)
        # only for the types that open or close intervals.
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
        if event.type in self.catalogue.interval_types:
            self._apply_with_intervals(sequence, event)
            return
        try:
            counts = usage_counts(self.catalogue, event)
        except InvalidUsageError:
            # Not seen: the live consumer dead-letters it, so its id is not in the inbox either.
            stats.rejected += 1
            return
        self._applied(event_id, sequence)
        if not counts:
            return
        tenant, data, period, rows = event.tenant, event.data, self.period, self.rows
        room = str(getattr(data, "room", ""))
        dispatch = str(getattr(data, "dispatch_id", ""))
        group_window: datetime | None = None
        cells: Cells | None = None
        for window, meter, quantity, is_max in counts:
            if window is not group_window:  # the counts of one window come together
                group_window = window
                if period is not None and not period.start <= window < period.end:
                    cells = None
                    continue
                key = (tenant, window, room, dispatch)
                cells = rows.get(key)
                if cells is None:
                    cells = rows[key] = {}
            if cells is None:
                continue
            cell = cells.get(meter)
            if cell is None:
                cells[meter] = [quantity, sequence, sequence]
                self.held += 1
                continue
            if not is_max:
                cell[0] += quantity
            elif quantity > cell[0]:
                cell[0] = quantity
            if sequence < cell[1]:
                cell[1] = sequence
            if sequence > cell[2]:
                cell[2] = sequence

    def _applied(self, event_id: str, sequence: int) -> None:
        self.seen.add(event_id)
        if self.inbox is not None:
            self.inbox.append((event_id, sequence))
        self.stats.applied += 1

    def _apply_with_intervals(self, sequence: int, event: Envelope) -> None:
        known = {
            i: self.intervals[i] for i in interval_ids(self.catalogue, event) if i in self.intervals
        }
        try:
            metered = meter_event(self.catalogue, event, sequence, known)
        except InvalidUsageError:
            self.stats.rejected += 1
            return
        self._applied(event.id, sequence)
        for interval in metered.intervals:
            self.intervals[interval.id] = interval
        period = self.period
        for (tenant, window, meter, room, dispatch), quantity, first, last, op in metered.deltas:
            if period is not None and not period.start <= window < period.end:
                continue
            cells = self.rows.setdefault((tenant, window, room, dispatch), {})
            cell = cells.get(meter)
            if cell is None:
                cells[meter] = [quantity, first, last]
                self.held += 1
                continue
            if op != "max":
                cell[0] += quantity
            elif quantity > cell[0]:
                cell[0] = quantity
            if first < cell[1]:
                cell[1] = first
            if last > cell[2]:
                cell[2] = last

    def take_rows(self) -> list[Row]:
        """The rows accumulated since the last call (each key once), and forget them."""
        rows = [
            Row(tenant, window, meter, room, dispatch, quantity, first, last)
            for (tenant, window, room, dispatch), cells in self.rows.items()
            for meter, (quantity, first, last) in cells.items()
        ]
        self.rows, self.held = {}, 0
        return rows
