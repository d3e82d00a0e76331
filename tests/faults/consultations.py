"""What the agent cases share: a consultation under way with the stand-in, the agent's journal
(its spool) on disk, and reading one key's events back from the log."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import nats.errors
import nats.js.errors
from livekit import rtc

from services.agent.spool import read_unsent, spool_root
from shared import subjects
from shared.bus import Bus
from shared.events import CODEC, Envelope, Event
from shared.events.agents import AgentSessionStarted, AgentUsageReported
from tests.faults.support import FaultStack
from tests.standin import OpenAIStandin
from tests.support import eventually
from tests.test_agent_e2e import (
    HEARD,
    OPENAI,
    Participant,
    dispatch,
    following,
    new_room,
    speech,
    state_of,
)

T = TypeVar("T")


async def logged(bus: Bus, kind: type[Event], tenant: str, key: str) -> list[Envelope]:
    """Every message of one type about one key in its stream, duplicates included."""
    subscription = await bus.js.pull_subscribe(
        subjects.key_filter(kind, tenant=tenant, key=key), stream=subjects.stream_name(kind.STREAM)
    )
    found: list[Envelope] = []
    try:
        while True:
            try:
                messages = await subscription.fetch(100, timeout=0.5)
            except TimeoutError:
                return found
            found.extend(CODEC.decode(m.data) for m in messages)
    finally:
        with contextlib.suppress(nats.errors.Error):
            await subscription.unsubscribe()


async def once_back(check: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
    """``eventually``, counting NATS still coming back (no JetStream yet) as not yet."""

    async def attempt() -> T | None:
        try:
            return await check()
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError):
            return None

    result = await eventually(attempt, timeout=timeout, step=0.2)
    assert result is not None
    return result


def journal_of(faulty: FaultStack, dispatch_id: str) -> Path | None:
    found = sorted(spool_root(faulty.settings.data_dir).glob(f"*/{dispatch_id}-*.jsonl"))
    return found[-1] if found else None


def released(path: Path) -> bool:
    """Whether the job process let go of its journal (it ended, or died)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops the test's own lock at once
    return True


def unsent(path: Path | None) -> list[Envelope]:
    try:
        return read_unsent(path) if path else []
    except FileNotFoundError:
        return []


def contiguous(reports: list[Any]) -> bool:
    return sorted(r.sequence for r in reports) == list(range(1, len(reports) + 1))


async def consultation_under_way(
    bus: Bus, api: httpx.AsyncClient, standin: OpenAIStandin, identity: str
) -> tuple[Participant, AgentSessionStarted]:
    """A patient and a generic agent talking, with a usage report already on the log."""
    standin.transcript_default(HEARD)
    standin.chat("dor de cabeça", text="Entendi. A dor é forte?", usage={"prompt_tokens": 90})
    room = new_room()
    patient = await Participant.join(api, room, identity)
    async with following(bus, AgentSessionStarted, AgentUsageReported) as events:
        created = await dispatch(api, room=room, role="generic", **OPENAI)
        started: AgentSessionStarted = await events.next(
            AgentSessionStarted, created["id"], timeout=60
        )
        await state_of(api, created["id"], "joined")
        spoke = await patient.say(*speech())
        await patient.wait_for_voice(spoke, started.agent_identity)
        await events.next(AgentUsageReported, created["id"], where=lambda d: d.llm_prompt_tokens)
    return patient, started


def agents_in(patient: Participant) -> list[str]:
    return [
        p.identity
        for p in patient.room.remote_participants.values()
        if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    ]
