"""The billing replay's fold, in one process, without NATS or Postgres: µs per event.

    uv run python -m bench.billing_fold [--events 200000] [--runs 7]

Makes the replay benchmark's events (``bench.replay_events``: consultations of one tenant over
one month, about 94 % of them agent usage reports), encodes them as they are stored, cuts them
into the batches a replay reads (``shared.replay.BATCH``), then per run times, in turn:

- **decode**: the codec alone on every payload;
- **meter**: the metering alone on every decoded event (``usage_counts`` for the event types
  without intervals, ``meter_event`` for the others, each against no interval state);
- **replay fold**: what a replay does per batch (``services.billing.fold.fold``: decoding,
  metering and folding into a fresh ``Projector``), then ``take_rows``;

and prints the median and p90 over the runs of each, with **fold** = replay fold − decode −
meter (updating the rows, the seen set, the inbox and the counts) and **rows** (``take_rows``).
It measures CPU time of this process only (``time.process_time``), but on a shared machine
other processes still slow it (caches, frequency): quote the load with it.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
from collections.abc import Callable
from zoneinfo import ZoneInfo

from bench.replay_events import TENANT, consultations
from services.billing.fold import collector_paused, fold
from services.billing.metering import meter_event, usage_counts
from services.billing.meters import DEFAULT
from services.billing.projector import Projector
from shared.events import CODEC, Envelope, envelope
from shared.replay import BATCH, Batch


def payloads(count: int) -> list[Batch]:
    """``count`` stored events in replay batches of (sequence, payload)."""
    zone = ZoneInfo("America/Sao_Paulo")
    found = [
        (sequence, CODEC.encode(envelope(data, source="mediai/bench", tenant=TENANT, subject="r")))
        for sequence, data in enumerate(consultations(count, zone), start=1)
    ]
    return [found[i : i + BATCH] for i in range(0, len(found), BATCH)]


def timed(work: Callable[[], object]) -> float:
    gc.collect()
    started = time.process_time()
    work()
    return time.process_time() - started


def one_run(batches: list[Batch], events: list[Envelope]) -> dict[str, float]:
    """Seconds of CPU per piece for one pass over the events."""
    decode = CODEC.decode
    interval_types = DEFAULT.interval_types

    def decoding() -> None:
        for batch in batches:
            for _, payload in batch:
                decode(payload)

    def metering() -> None:
        for sequence, event in enumerate(events, start=1):
            if event.type in interval_types:
                meter_event(DEFAULT, event, sequence, {})
            else:
                usage_counts(DEFAULT, event)

    projector = Projector(DEFAULT, keep_inbox=True)

    def folding() -> None:
        for batch in batches:
            fold(projector, batch, CODEC, frozenset(), None)

    return {
        "decode": timed(decoding),
        "meter": timed(metering),
        "replay fold": timed(folding),
        "rows": timed(lambda: _take_rows(projector)),
    }


def _take_rows(projector: Projector) -> None:
    with collector_paused():  # as services.billing.fold.fold_range takes them
        projector.take_rows()


def main(count: int, runs: int) -> None:
    batches = payloads(count)
    events = [CODEC.decode(payload) for batch in batches for _, payload in batch]
    usage = sum(1 for e in events if e.type not in DEFAULT.interval_types)
    print(
        f"{len(events):,} events ({usage / len(events):.0%} without intervals), "
        f"{len(batches)} batches; load {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    one_run(batches[:2], events[: 2 * BATCH])  # warm up
    per_event: dict[str, list[float]] = {}
    for run in range(1, runs + 1):
        seconds = one_run(batches, events)
        seconds["fold"] = seconds["replay fold"] - seconds["decode"] - seconds["meter"]
        for name, value in seconds.items():
            per_event.setdefault(name, []).append(value / len(events) * 1e6)
        print(
            f"run {run}: "
            + ", ".join(
                f"{name} {value / len(events) * 1e6:.2f}" for name, value in seconds.items()
            )
            + " µs/event",
            flush=True,
        )
    print(f"\n{'µs per event':<14} {'median':>8} {'p90':>8}   ({runs} runs)")
    for name in ("decode", "meter", "fold", "replay fold", "rows"):
        values = sorted(per_event[name])
        p90 = values[min(len(values) - 1, round(0.9 * (len(values) - 1)))]
        print(f"{name:<14} {statistics.median(values):>8.2f} {p90:>8.2f}")
    total = statistics.median(per_event["replay fold"]) + statistics.median(per_event["rows"])
    print(f"one core folds about {1e6 / total:,.0f} events/s; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=7)
    arguments = parser.parse_args()
    main(arguments.events, arguments.runs)
