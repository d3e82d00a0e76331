"""The billing replay benchmark's events: made up, and published fast into the real stream.

The stack's NATS fsyncs every write (``sync_interval: always``), so a publisher that awaits each
acknowledgement (``js.publish``) gets a few thousand events/s. Here the publishes are plain
core-NATS messages with a reply subject: JetStream still stores and acknowledges every one,
fsynced, but the acknowledgements come back asynchronously on one wildcard subscription while
up to ``WINDOW`` publishes are in flight, so the server batches its writes and fsyncs. Every
acknowledgement is read and checked: an error (or a missing one) fails the benchmark.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from nats.aio.msg import Msg

from services.billing.periods import month_period
from shared import subjects
from shared.bus import Bus
from shared.events import CODEC, Event, envelope
from shared.events.agents import AgentUsageReported
from shared.events.rooms import EgressEnded, EgressStarted, ParticipantJoined, ParticipantLeft

TENANT = "tbench00001"
MONTH = "2026-01"
REPORTS_PER_SESSION = 80  # 20 minutes of reports every 15 s
WINDOW = 20_000  # publishes awaiting their acknowledgement at most


def consultations(count: int, zone: ZoneInfo, month_name: str = MONTH) -> Iterator[Event]:
    """``count`` events: consultations spread evenly over the month, each one a dispatch's
    usage reports, a patient and a doctor, and a recording every third consultation."""
    month = month_period(month_name, zone)
    produced, number = 0, 0
    per_session = REPORTS_PER_SESSION + 4 + 2
    sessions = max(1, count // per_session)
    spacing = (month.end - month.start - timedelta(minutes=30)) / sessions
    while produced < count:
        start = month.start + spacing * (number % sessions)
        events = _consultation(number, start)
        yield from events[: count - produced]
        produced += len(events)
        number += 1


def _consultation(number: int, start: datetime) -> list[Event]:
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
    return events


class _Acks:
    """Counts the stream's acknowledgements of the publishes in flight; remembers the first
    error."""

    def __init__(self) -> None:
        self.received = 0
        self.error: str | None = None
        self.changed = asyncio.Event()

    async def on_ack(self, message: Msg) -> None:
        self.received += 1
        if self.error is None and b'"error"' in message.data:
            self.error = json.loads(message.data)["error"].get("description", "error")
        self.changed.set()

    async def until(self, count: int) -> None:
        while self.received < count and self.error is None:
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), timeout=30)
            except TimeoutError:
                raise RuntimeError(
                    f"{count - self.received} events were never acknowledged"
                ) from None
        if self.error is not None:
            raise RuntimeError(f"JetStream refused a benchmark event: {self.error}")


async def publish(bus: Bus, events: Iterator[Event], total: int, tenant: str = TENANT) -> float:
    """Publish ``events`` (``total`` of them) of ``tenant`` to the stream with asynchronous
    acknowledgements; returns the seconds it took until the last one was acknowledged."""
    started = time.monotonic()
    acks = _Acks()
    inbox = bus.nc.new_inbox()
    subscription = await bus.nc.subscribe(f"{inbox}.*", cb=acks.on_ack)
    try:
        sent = 0
        for data in events:
            document = envelope(
                data, source="mediai/bench", tenant=tenant, subject=getattr(data, "room", "x")
            )
            await bus.nc.publish(
                subjects.event_subject(data, tenant=tenant, key=document.subject),
                CODEC.encode(document),
                reply=f"{inbox}.{sent}",
                headers={"Nats-Msg-Id": document.id},
            )
            sent += 1
            if sent - acks.received >= WINDOW:
                await bus.nc.flush()
                await acks.until(sent - WINDOW // 2)
            if sent % 100_000 == 0:
                print(f"  published {sent:,}/{total:,}", flush=True)
        await bus.nc.flush()
        await acks.until(sent)
    finally:
        await subscription.unsubscribe()
    return time.monotonic() - started
