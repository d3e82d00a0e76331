"""The agent's events survive: the spool on its own (real files, a real killed process, a real
NATS), then a consultation on a private stack whose NATS is stopped by its pid."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from deploy.stack import nats_part
from deploy.supervisor import Supervisor
from services.agent.leftovers import WorkerSpool
from services.agent.metrics import SpoolCollector
from services.agent.spool import Journal, read_unsent, refused_total, spooled_bytes
from shared import subjects
from shared.bus import Bus, connect_bus
from shared.config import Settings
from shared.crypto import DataKey
from shared.events import CODEC, Envelope, Event, envelope
from shared.events.agents import AgentTranscribed
from shared.keys import DispatchKeys
from shared.phi import Phi
from tests.support import stack_settings

REPO = Path(__file__).resolve().parent.parent
TENANT = "tspooltests"
SAID = "Estou com dor de cabeça desde segunda-feira."


def transcript(dispatch_id: str, n: int) -> Envelope:
    data = AgentTranscribed(
        dispatch_id=dispatch_id,
        room="consulta-1",
        role="intake",
        segment_id=f"seg-{n}",
        speaker="user",
        text=f"{SAID} ({n})",
        spoken_at=datetime.now(UTC),
    )
    return envelope(data, source="mediai/agent", tenant=TENANT, subject=dispatch_id)


def dispatch_phi(secret: bytes) -> Phi:
    """What a job seals with: its dispatch's keys, here one tenant key given outright (the key
    service is not part of this test; the job would have fetched it)."""
    key = DataKey(key_id="kspool", tenant=TENANT, purpose="tenant", patient_ref="", secret=secret)
    return Phi(DispatchKeys(None, TENANT, "d", [key]))  # type: ignore[arg-type]


async def on_the_log(bus: Bus, kind: type[Event], key: str) -> list[Envelope]:
    """Every message of one type about one key in its stream, duplicates included."""
    subscription = await bus.js.pull_subscribe(
        subjects.key_filter(kind, tenant=TENANT, key=key), stream=subjects.stream_name(kind.STREAM)
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
        await subscription.unsubscribe()


# -- the journal ------------------------------------------------------------------------------


def test_a_journal_keeps_what_is_unsent_in_order_and_empties_once_all_is_sent(
    tmp_path: Path,
) -> None:
    root = tmp_path / "agent-spool"
    journal = Journal.create(root, "worker-1", "d1", max_bytes=1 << 20)
    assert oct(journal.path.stat().st_mode & 0o777) == "0o600"  # transcripts are personal
    assert oct(journal.path.parent.stat().st_mode & 0o777) == "0o700"
    events = [transcript("d1", n) for n in range(3)]
    offsets = [journal.append(e) for e in events]
    assert [e.id for e in read_unsent(journal.path)] == [e.id for e in events]

    journal.sent(offsets[0])
    assert [e.id for e in read_unsent(journal.path)] == [events[1].id, events[2].id]
    journal.sent(offsets[1])
    journal.sent(offsets[2])
    assert journal.path.stat().st_size == 0  # all acknowledged: nothing personal left on disk

    later = transcript("d1", 3)
    journal.append(later)
    journal.close()  # unsent: stays for the worker
    assert [e.id for e in read_unsent(journal.path)] == [later.id]

    done = Journal.create(root, "worker-1", "d2", max_bytes=1 << 20)
    done.sent(done.append(transcript("d2", 0)))
    done.close()
    assert not done.path.exists()


def test_the_spool_is_bounded_and_says_so_without_personal_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "agent-spool"
    earlier, events = transcript("d0", 0), [transcript("d1", n) for n in range(6)]
    # Room for another session's line and four of these, not for a fifth.
    cap = line_size(earlier) + sum(map(line_size, events[:4])) + min(map(line_size, events[4:])) - 1
    other = Journal.create(root, "worker-2", "d0", max_bytes=cap)
    other.append(earlier)
    journal = Journal.create(root, "worker-1", "d1", max_bytes=cap)
    with caplog.at_level(logging.ERROR, logger="services.agent.spool"):
        written = [journal.append(e) for e in events]
    assert sum(o is not None for o in written) == 4  # the cap counts every journal on the dir
    assert written[4:] == [None, None]
    assert spooled_bytes(root) <= cap
    assert refused_total(root / "worker-1") == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1  # once per session; the counter goes on
    assert "mediai.agent.transcribed.v1" in errors[0] and "cap" in errors[0]
    assert "dor de cabeça" not in caplog.text


def line_size(event: Envelope) -> int:
    return len(b"-" + CODEC.encode(event) + b"\n")


# -- a killed job's leftovers -----------------------------------------------------------------

CHILD = """
import sys, time
from datetime import UTC, datetime
from pathlib import Path
from services.agent.leftovers import WorkerSpool
from services.agent.spool import Journal
from tests.test_agent_spool import dispatch_phi, transcript
root, dispatch_id, secret = Path(sys.argv[1]), sys.argv[2], bytes.fromhex(sys.argv[3])
worker = WorkerSpool(root, "dead-worker")
journal = Journal.create(root, "dead-worker", dispatch_id, max_bytes=1 << 20)
# Sealed before the journal sees them, as the job's reporter does.
events = [dispatch_phi(secret).seal_now(transcript(dispatch_id, n)) for n in range(5)]
offsets = [journal.append(e) for e in events]
journal.sent(offsets[0])
journal.sent(offsets[1])
print(" ".join(e.id for e in events), flush=True)
time.sleep(3600)
"""


@pytest.fixture
async def private_nats(tmp_path: Path) -> AsyncIterator[tuple[Settings, Supervisor]]:
    settings = stack_settings(tmp_path / "stack")
    supervisor = Supervisor(settings.host, settings.data_dir / "logs")
    await supervisor.start(nats_part(settings))
    try:
        yield settings, supervisor
    finally:
        await supervisor.stop()


async def test_what_a_killed_job_left_is_published_once_by_another_worker(
    tmp_path: Path, private_nats: tuple[Settings, Supervisor]
) -> None:
    settings, _ = private_nats
    root, dispatch_id, secret = tmp_path / "agent-spool", str(uuid.uuid4()), os.urandom(32)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(root),
        dispatch_id,
        secret.hex(),
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO,
    )
    assert child.stdout is not None
    ids = (await asyncio.wait_for(child.stdout.readline(), 30)).decode().split()
    assert len(ids) == 5
    bus = await connect_bus(settings, "tests")
    replacement = WorkerSpool(root, "replacement")
    try:
        # While the job lives its journal is its own, and its worker's folder stays.
        assert await replacement.flush(bus) == 0
        assert (root / "dead-worker").is_dir()
        # The third event did reach JetStream before the kill; only its mark was missing.
        (leftover,) = (root / "dead-worker").glob("*.jsonl")
        assert SAID.encode() not in leftover.read_bytes()  # the disk holds ciphertext only
        third = read_unsent(leftover)[0]
        assert third.id == ids[2]
        await bus.publish_envelope(third)

        os.kill(child.pid, signal.SIGKILL)
        assert await child.wait() == -signal.SIGKILL
        assert await replacement.flush(bus) == 3
        assert await replacement.flush(bus) == 0  # nothing twice
        assert not (root / "dead-worker").exists()  # a dead worker's folder goes once empty
        logged = await on_the_log(bus, AgentTranscribed, dispatch_id)
        assert [e.id for e in logged] == ids[2:]  # in order, each once (Msg-Id dedup)
        opened = [(await dispatch_phi(secret).open(e)).data for e in logged]
        assert [d.text for d in opened] == [f"{SAID} ({n})" for n in (2, 3, 4)]
        served = {m.name: m.samples[0].value for m in SpoolCollector(replacement).collect()}
        assert served == {
            "mediai_agent_spool_bytes": 0,
            "mediai_agent_spool_refused": 0,
            "mediai_agent_spool_flushed": 3,
        }
    finally:
        replacement.close()
        await bus.close()
