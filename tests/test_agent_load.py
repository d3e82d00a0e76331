"""The load a worker announces: a taken slot at once, a freed slot only once LiveKit has been
told too (services/agent/load.py), so the dispatcher never sends LiveKit a job it would drop."""

from __future__ import annotations

from typing import cast

from services.agent.load import LIVEKIT_LAG_SECONDS, LoadReporter
from shared.bus import Bus


def test_a_rise_counts_at_once_and_a_fall_after_livekit_has_heard_of_it() -> None:
    jobs = [0]
    reporter = LoadReporter(cast(Bus, None), "w1", max_jobs=2, jobs=lambda: jobs[0])
    assert reporter.counted(0.0) == 0
    jobs[0] = 1
    assert reporter.counted(0.25) == 1  # taken: at once
    jobs[0] = 0
    assert reporter.counted(1.0) == 1  # freed: LiveKit may still think the worker has it
    assert reporter.counted(0.25 + LIVEKIT_LAG_SECONDS - 0.01) == 1
    assert reporter.counted(0.25 + LIVEKIT_LAG_SECONDS + 0.01) == 0
