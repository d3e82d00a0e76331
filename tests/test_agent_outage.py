"""The agent's events survive NATS going away: a consultation with the OpenAI-compatible stand-in
on a private stack (its own NATS, Postgres, LiveKit, token and dispatcher with its worker pool),
whose NATS is killed by its pid and started again on the same port and data."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import nats.errors
import nats.js.errors
import pytest

from deploy.stack import Stack, nats_part
from services.agent.spool import read_unsent, spool_root
from shared import subjects
from shared.bus import Bus, connect_bus
from shared.events import CODEC, Envelope, Event
from shared.events.agents import (
    AgentDispatchFailed,
    AgentSessionEnded,
    AgentSessionStarted,
    AgentUsageReported,
    AgentWorkerStarted,
)
from tests.standin import OpenAIStandin
from tests.support import eventually, stack_settings, until
from tests.test_agent_e2e import (
    HEARD,
    OPENAI,
    Participant,
    alive_in_group,
    dispatch,
    following,
    last_event,
    new_room,
    registered_workers,
    speech,
    state_of,
)

pytestmark = pytest.mark.livekit

PERIOD = 1  # agent_usage_period: a report every second, so a test sees several
T = TypeVar("T")


@pytest.fixture(scope="module")
async def outage_stack(openai_standin: OpenAIStandin) -> AsyncIterator[Stack]:
    """A stack this module may break. Not under pytest's tmp_path (see conftest.settings)."""
    data_dir = Path(tempfile.mkdtemp(prefix="mediai-outage-"))
    services = ["token", "dispatcher"]
    settings = stack_settings(
        data_dir,
        services=tuple(services),
        openai_base_url=openai_standin.base_url,
        openai_api_key="standin-key",
        agent_usage_period=PERIOD,
        agent_pool_min=1,
        agent_pool_max=1,
    )
    stack = Stack(settings, services=services)
    await stack.start()
    try:
        yield stack
    finally:
        await stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def nats_process(stack: Stack) -> asyncio.subprocess.Process | None:
    """The stack's NATS server while it runs."""
    for part in reversed(stack.supervisor.parts):
        if part.name == "nats" and part.process and part.process.returncode is None:
            return part.process
    return None


async def kill_nats(stack: Stack) -> None:
    process = nats_process(stack)
    assert process is not None
    os.kill(process.pid, signal.SIGKILL)
    await process.wait()


async def start_nats(stack: Stack) -> None:
    """NATS again on the same port and data, in its old place among the parts (so the stack
    still stops it after the services)."""
    parts = stack.supervisor.parts
    place = next(i for i, part in enumerate(parts) if part.name == "nats")
    await stack.supervisor.start(nats_part(stack.settings))
    parts[place] = parts.pop()


@pytest.fixture
async def outage(
    outage_stack: Stack, openai_standin: OpenAIStandin
) -> AsyncIterator[tuple[Stack, Bus, httpx.AsyncClient]]:
    """The private stack with NATS running (a failed test may have left it stopped), a bus and
    an API client of its own, and the stand-in reset."""
    stack = outage_stack
    if nats_process(stack) is None:
        await start_nats(stack)
    openai_standin.reset()
    assert stack.state is not None
    bus = await connect_bus(stack.settings, "tests", streams="create")
    await registered_workers(bus)  # a replacement may still be starting after the last test
    async with httpx.AsyncClient(
        base_url=stack.state.gateway_url,
        headers={"Authorization": f"Bearer {stack.state.dev_api_key}"},
        timeout=10,
    ) as api:
        yield stack, bus, api
    await bus.close()


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


def journal_of(stack: Stack, dispatch_id: str) -> Path | None:
    found = sorted(spool_root(stack.settings.data_dir).glob(f"*/{dispatch_id}-*.jsonl"))
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


# ---------------------------------------------------------------------------------------------


async def test_a_session_ending_while_nats_is_away_reaches_the_log_once_it_is_back(
    outage: tuple[Stack, Bus, httpx.AsyncClient], openai_standin: OpenAIStandin
) -> None:
    stack, bus, api = outage
    patient, started = await consultation_under_way(bus, api, openai_standin, "patient-21")
    dispatch_id = started.dispatch_id

    await kill_nats(stack)
    await patient.leave()  # the agent ends (room_empty) with nobody to tell
    # The job gives up on NATS after a bounded wait and ends, leaving its last events on disk.
    journal = journal_of(stack, dispatch_id)
    assert journal is not None
    await until(lambda: released(journal), timeout=30)
    left = unsent(journal)
    (ended_on_disk,) = [e for e in left if isinstance(e.data, AgentSessionEnded)]
    (final,) = [e for e in left if isinstance(e.data, AgentUsageReported) and e.data.final]
    tenant = ended_on_disk.tenant

    await start_nats(stack)
    back = time.monotonic()

    async def ended() -> list[Envelope]:
        return await logged(bus, AgentSessionEnded, tenant, dispatch_id)

    (ended_event,) = await once_back(ended)  # exactly one, whatever was retried
    print(f"NATS back -> session_ended on the log: {time.monotonic() - back:.2f}s")
    assert ended_event.id == ended_on_disk.id and ended_event.data.reason == "room_empty"
    reports = await logged(bus, AgentUsageReported, tenant, dispatch_id)
    ids = [r.id for r in reports]
    assert len(ids) == len(set(ids))  # each report once (Msg-Id window, same event id)
    assert [r.id for r in reports if r.data.final] == [final.id]
    assert {e.id for e in left if isinstance(e.data, AgentUsageReported)} <= set(ids)
    assert contiguous([r.data for r in reports])  # nothing lost before the final one
    await until(lambda: not journal.exists(), timeout=10)  # published, then deleted
    shown = await state_of(api, dispatch_id, "ended", timeout=20)  # not left joined
    assert shown["reason"] == "room_empty"


async def test_a_worker_killed_while_nats_is_away_loses_at_most_one_usage_period(
    outage: tuple[Stack, Bus, httpx.AsyncClient], openai_standin: OpenAIStandin
) -> None:
    stack, bus, api = outage
    patient, started = await consultation_under_way(bus, api, openai_standin, "patient-22")
    dispatch_id = started.dispatch_id
    worker = (await last_event(bus, AgentWorkerStarted, started.worker_id)).data

    await kill_nats(stack)
    # Reports go on while NATS is away: they are only on disk, in the job's journal.
    journal = journal_of(stack, dispatch_id)
    assert journal is not None

    def reports_on_disk() -> list[AgentUsageReported]:
        return [e.data for e in unsent(journal) if isinstance(e.data, AgentUsageReported)]

    await until(lambda: len(reports_on_disk()) >= 2, timeout=15)
    killed_at = datetime.now(UTC)
    os.kill(worker.pid, signal.SIGKILL)  # the worker, and with it the job process
    await until(lambda: not alive_in_group(worker.pid), 10)
    left = reports_on_disk()
    assert left and not any(r.final for r in left)
    tenant = unsent(journal)[0].tenant

    await start_nats(stack)
    back = time.monotonic()
    # A replacement worker (the pool restarts it) publishes what the dead job left.
    await until(lambda: not journal.exists(), timeout=90)
    print(f"NATS back -> the dead job's events published: {time.monotonic() - back:.2f}s")
    await until(lambda: not journal.parent.exists(), timeout=10)  # the dead worker's folder too

    async def failed() -> list[Envelope]:
        return await logged(bus, AgentDispatchFailed, tenant, dispatch_id)

    (failure,) = await once_back(failed)
    assert failure.data.reason == "worker_lost"
    assert (await state_of(api, dispatch_id, "failed", timeout=20))["reason"] == "worker_lost"
    reports = [r.data for r in await logged(bus, AgentUsageReported, tenant, dispatch_id)]
    assert len(reports) == max(r.sequence for r in left)  # up to the last one made, each once
    assert contiguous(reports) and not any(r.final for r in reports)
    last = max(reports, key=lambda r: r.sequence)
    assert (killed_at - last.period_end).total_seconds() <= PERIOD + 1.0  # at most one period
    assert await logged(bus, AgentSessionEnded, tenant, dispatch_id) == []
    await patient.leave()
