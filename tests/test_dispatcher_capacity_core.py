"""The capacity decision on its own: the workers' load reports, folded, decide whether one
more dispatch has room (services/dispatcher/capacity_core.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from services.dispatcher import capacity_core
from services.dispatcher.core import DispatchRejectedError
from shared.events.agents import AgentWorkerLoadReported

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def report(
    worker: str, active: int, *, most: int = 2, available: bool = True
) -> AgentWorkerLoadReported:
    return AgentWorkerLoadReported(
        worker_id=worker,
        active_jobs=active,
        max_jobs=most,
        available=available,
        next_report_seconds=30.0,
        reported_at=NOW,
    )


def fold(*reports: AgentWorkerLoadReported) -> dict[str, capacity_core.WorkerLoad]:
    loads: dict[str, capacity_core.WorkerLoad] = {}
    for r in reports:
        loads = capacity_core.evolve(loads, r, NOW)
    return loads


def refusal(
    loads: dict[str, capacity_core.WorkerLoad], starting: int = 0, now: datetime = NOW
) -> str:
    with pytest.raises(DispatchRejectedError) as refused:
        capacity_core.check(loads, starting=starting, now=now)
    assert refused.value.status == 503
    return refused.value.code


def test_a_free_slot_on_any_host_takes_the_dispatch() -> None:
    loads = fold(report("host-a", 2), report("host-b", 1))
    capacity_core.check(loads, starting=0, now=NOW)  # host-b has one free slot


def test_every_worker_full_is_refused_with_the_counts() -> None:
    loads = fold(report("host-a", 2), report("host-b", 2))
    with pytest.raises(DispatchRejectedError) as refused:
        capacity_core.check(loads, starting=0, now=NOW)
    assert refused.value.code == "agents_at_capacity"
    assert refused.value.details == [
        {"retryAfterSeconds": 5, "workers": 2, "activeJobs": 4, "startingJobs": 0, "capacity": 4}
    ]


def test_dispatches_still_starting_take_the_free_slots() -> None:
    loads = fold(report("host-a", 1))
    assert refusal(loads, starting=1) == "agents_at_capacity"


def test_a_session_joined_before_its_workers_report_holds_its_slot() -> None:
    # One slot, and the report does not show the session that joined yet.
    loads = fold(report("host-a", 0, most=1))
    with pytest.raises(DispatchRejectedError) as refused:
        capacity_core.check(loads, starting=0, running=1, now=NOW)
    assert refused.value.code == "agents_at_capacity"
    assert refused.value.details[0]["activeJobs"] == 1
    # A session the reports show already is not counted twice.
    capacity_core.check(
        fold(report("host-a", 1), report("host-b", 0)), starting=0, running=1, now=NOW
    )
    capacity_core.check(fold(report("host-a", 0)), starting=0, running=1, now=NOW)


def test_the_latest_report_of_a_worker_replaces_its_last() -> None:
    loads = fold(report("host-a", 2), report("host-a", 1))
    capacity_core.check(loads, starting=0, now=NOW)


def test_a_draining_worker_offers_nothing_and_leaves_once_empty() -> None:
    draining = fold(report("host-a", 1, available=False))
    assert refusal(draining) == "no_agent_worker"
    assert fold(report("host-a", 1, available=False), report("host-a", 0, available=False)) == {}


def test_a_silent_worker_is_forgotten_after_three_periods() -> None:
    loads = fold(report("host-a", 0))
    capacity_core.check(loads, starting=0, now=NOW + timedelta(seconds=89))
    assert refusal(loads, now=NOW + timedelta(seconds=90)) == "no_agent_worker"


def test_an_exited_worker_is_forgotten_at_once() -> None:
    loads = capacity_core.forget(fold(report("host-a", 0), report("host-b", 2)), "host-a")
    assert refusal(loads) == "agents_at_capacity"


def test_no_worker_at_all_is_refused() -> None:
    assert refusal({}) == "no_agent_worker"


def beating(worker: str, active: int, *, most: int = 2) -> AgentWorkerLoadReported:
    return msgspec.structs.replace(report(worker, active, most=most), heartbeat_seconds=2.0)


def test_a_beating_worker_is_forgotten_after_three_missed_beats_not_three_reports() -> None:
    loads = fold(beating("host-a", 0))
    later = NOW + timedelta(seconds=5)
    capacity_core.check(loads, starting=0, now=later)  # within three beats of its report
    assert refusal(loads, now=NOW + timedelta(seconds=7)) == "no_agent_worker"
    # Each beat keeps it three more beats, however long since its last report.
    for second in range(2, 60, 2):
        loads = capacity_core.heard(loads, "host-a", NOW + timedelta(seconds=second))
    capacity_core.check(loads, starting=0, now=NOW + timedelta(seconds=63))
    assert refusal(loads, now=NOW + timedelta(seconds=65)) == "no_agent_worker"


def test_a_beat_alone_brings_back_no_worker_and_a_silent_reporter_keeps_its_periods() -> None:
    # A beat of a worker no report announced (or one forgotten) carries no load: ignored.
    assert capacity_core.heard({}, "host-a", NOW) == {}
    # A worker that does not beat (heartbeat_seconds 0) keeps three report periods.
    loads = fold(report("host-b", 0))
    assert capacity_core.heard(loads, "host-b", NOW + timedelta(seconds=80)) == loads
    capacity_core.check(loads, starting=0, now=NOW + timedelta(seconds=89))
    assert refusal(loads, now=NOW + timedelta(seconds=91)) == "no_agent_worker"
