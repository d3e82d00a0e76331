"""Usage limits, free of I/O: which thresholds of a monthly cap a quantity has reached."""

from __future__ import annotations

from collections.abc import Set
from typing import NamedTuple

THRESHOLDS = (80, 100)


class LimitChange(NamedTuple):
    threshold: int
    reached: bool


def reached_thresholds(quantity: int, monthly_quantity: int | None) -> frozenset[int]:
    """The thresholds (percent of the cap) ``quantity`` is at or above; none without a cap."""
    if monthly_quantity is None:
        return frozenset()
    return frozenset(t for t in THRESHOLDS if quantity * 100 >= monthly_quantity * t)


def limit_changes(
    quantity: int, monthly_quantity: int | None, reached: Set[int]
) -> list[LimitChange]:
    """What to announce so the reached thresholds match the quantity and the cap: each one newly
    reached, and each one that no longer holds (the cap was raised or removed)."""
    target = reached_thresholds(quantity, monthly_quantity)
    return [
        LimitChange(threshold, threshold in target)
        for threshold in THRESHOLDS
        if (threshold in target) != (threshold in reached)
    ]
