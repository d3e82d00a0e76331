"""Billing replays on this machine: a full projection rebuild and an audit of one month.

    uv run python -m bench.billing_replay [--events 1000000]

Starts a private NATS and Postgres (the same parts as ``mediai up``) in a temporary folder,
publishes ``--events`` usage-bearing events of one tenant spread over one billing month
(agent usage reports every 15 s, participants joining and leaving, some recordings), then
times ``rebuild`` (the whole projection from the stream) and ``run_audit`` (that month).
Prints the figures; never fails on speed. Stops by itself (``--budget`` seconds at most).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from deploy.stack import nats_part, postgres_part
from deploy.supervisor import Supervisor
from services.billing.audit import run_audit
from services.billing.periods import month_period
from services.billing.rebuild import rebuild
from shared import subjects
from shared.bus import Bus, connect_bus
from shared.db import create_pool
from shared.events import CODEC, Event, envelope
from shared.events.agents import AgentUsageReported
from shared.events.rooms import EgressEnded, EgressStarted, ParticipantJoined, ParticipantLeft
from tests.support import stack_settings

TENANT = "tbench00001"
MONTH = "2026-01"
REPORTS_PER_SESSION = 80  # 20 minutes of reports every 15 s


def consultations(count: int, zone: ZoneInfo) -> Iterator[Event]:
    """``count`` events: consultations spread evenly over the month, each one a dispatch's
    usage reports, a patient and a doctor, and a recording every third consultation."""
    month = month_period(MONTH, zone)
    produced, number = 0, 0
    per_session = REPORTS_PER_SESSION + 4 + 2
    sessions = max(1, count // per_session)
    spacing = (month.end - month.start - timedelta(minutes=30)) / sessions
    while produced < count:
        start = month.start + spacing * (number % sessions)
        room, dispatch = f"room-{number % 40}", f"d-{number}"
        events: list[Event] = [
            ParticipantJoined(
                room=room, participant_sid=f"PA_p{number}", identity="p", joined_at=start
            ),
            ParticipantJoined(
                room=room,
                participant_sid=f"PA_d{number}",
                identity="d",
                joined_at=start + timedelta(seconds=40),
            ),
        ]
        if number % 3 == 0:
            events.append(EgressStarted(room=room, egress_id=f"EG_{number}", started_at=start))
        for n in range(REPORTS_PER_SESSION):
            begin = start + timedelta(seconds=15 * n)
            events.append(
                AgentUsageReported(
                    dispatch_id=dispatch,
                    room=room,
                    role="intake",
                    period_start=begin,
                    period_end=begin + timedelta(seconds=15),
                    final=n == REPORTS_PER_SESSION - 1,
                    llm_prompt_tokens=900 + n,
                    llm_completion_tokens=120,
                    llm_cached_tokens=300,
                    stt_audio_seconds=6.5,
                    tts_characters=180,
                    tts_audio_seconds=4.25,
                    session_seconds=15.0,
                )
            )
        end = start + timedelta(seconds=15 * REPORTS_PER_SESSION)
        if number % 3 == 0:
            events.append(
                EgressEnded(room=room, egress_id=f"EG_{number}", ended_at=end, status="complete")
            )
        events += [
            ParticipantLeft(room=room, participant_sid=f"PA_d{number}", identity="d", left_at=end),
            ParticipantLeft(
                room=room,
                participant_sid=f"PA_p{number}",
                identity="p",
                left_at=end + timedelta(seconds=20),
            ),
        ]
        yield from events[: count - produced]
        produced += len(events)
        number += 1


async def publish(bus: Bus, events: Iterator[Event], total: int) -> float:
    started, pending, done = time.monotonic(), [], 0
    for data in events:
        document = envelope(
            data, source="mediai/bench", tenant=TENANT, subject=getattr(data, "room", "x")
        )
        pending.append(
            bus.js.publish(
                subjects.event_subject(data, tenant=TENANT, key=document.subject),
                CODEC.encode(document),
                headers={"Nats-Msg-Id": document.id},
                timeout=30,
            )
        )
        if len(pending) == 2000:
            await asyncio.gather(*pending)
            done += len(pending)
            pending = []
            if done % 100_000 == 0:
                print(f"  published {done:,}/{total:,}", flush=True)
    await asyncio.gather(*pending)
    return time.monotonic() - started


async def main(events: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="mediai-bench-"))
    # Postgres runs as its own system user when we are root: it must reach its data folder.
    os.chmod(data_dir, 0o755)  # noqa: S103 - a private temporary folder of this benchmark
    settings = stack_settings(data_dir)
    zone = ZoneInfo(settings.billing_timezone)
    supervisor = Supervisor(settings.host, data_dir / "logs")
    try:
        for part in (nats_part(settings), postgres_part(settings)):
            await supervisor.start(part)
        bus = await connect_bus(settings, "bench", streams="create")
        pool = await create_pool(settings, max_size=4, statement_timeout=None)
        print(f"publishing {events:,} usage events of one tenant over {MONTH} ...", flush=True)
        published = await publish(bus, consultations(events, zone), events)
        print(f"  {published:.0f}s ({events / published:,.0f} events/s)")

        print("full rebuild ...", flush=True)
        result = await rebuild(pool, bus, zone)
        print(
            f"  {result.replay.events:,} events → {result.rows:,} usage rows in "
            f"{result.seconds:.1f}s: {result.events_per_second:,.0f} events/s "
            f"(reading and folding {result.replay_seconds:.1f}s, writing "
            f"{result.seconds - result.replay_seconds:.1f}s)"
        )

        print(f"audit of {MONTH} ...", flush=True)
        started = time.monotonic()
        report = await run_audit(
            pool,
            bus,
            tenant=TENANT,
            period=month_period(MONTH, zone),
            zone=zone,
            lookback=timedelta(seconds=settings.billing_audit_lookback),
        )
        seconds = time.monotonic() - started
        print(
            f"  {report.replay.applied:,} events replayed and compared in {seconds:.1f}s "
            f"({report.replay.applied / seconds:,.0f} events/s); matches={report.matches}; "
            f"total {report.replayed_cents / 100:,.2f} {report.currency}"
        )
        print(
            f"machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
            f"Python {platform.python_version()}"
        )
        await pool.close()
        await bus.close()
    finally:
        await supervisor.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--budget", type=float, default=3600.0, help="Give up after this long.")
    arguments = parser.parse_args()

    async def bounded() -> None:
        async with asyncio.timeout(arguments.budget):
            await main(arguments.events)

    asyncio.run(bounded())
