"""Streams declared on purpose, against a real three-node NATS cluster (R3 needs a cluster):
a process creates what is missing and never weakens what exists; `mediai streams` shows the
differences and `mediai streams apply` applies them, weakening only when told to."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from deploy.nats import nats_parts
from deploy.stack import StackState
from deploy.supervisor import Supervisor
from shared.bus import connect_bus
from shared.config import Settings
from shared.events import TokenIssued
from shared.events.platform import TenantCreated
from shared.streams import differences, stream_configs
from tests.faults.support import stored_events
from tests.support import free_port, stack_settings

DAY = 86400.0
GIB = 1 << 30


# --- which differences weaken a stream: no server needed ----------------------------------


def config(**changes: object) -> StreamConfig:
    return stream_configs(Settings())[2].evolve(**changes)  # the dead-letter stream


@pytest.mark.parametrize(
    ("declared", "actual", "weakens"),
    [
        ({"num_replicas": 1}, {"num_replicas": 3}, True),
        ({"num_replicas": 3}, {"num_replicas": 1}, False),
        ({"max_age": 7 * DAY}, {"max_age": 30 * DAY}, True),
        ({"max_age": 30 * DAY}, {"max_age": 0.0}, True),  # unlimited cut to 30 days
        ({"max_age": 0.0}, {"max_age": 30 * DAY}, False),
        ({"max_bytes": GIB}, {"max_bytes": -1}, True),
        ({"max_bytes": -1}, {"max_bytes": GIB}, False),
        ({"max_msgs": 1000}, {"max_msgs": -1}, True),
        ({"storage": StorageType.FILE}, {"storage": StorageType.MEMORY}, True),
        ({"discard": DiscardPolicy.OLD}, {"discard": DiscardPolicy.NEW}, True),
        ({"duplicate_window": 60.0}, {"duplicate_window": 3600.0}, True),
        ({"subjects": ["a.>"]}, {"subjects": ["a.>", "b.>"]}, True),
        ({"subjects": ["a.>", "b.>"]}, {"subjects": ["a.>"]}, False),
        ({"description": "new words"}, {"description": "old words"}, False),
    ],
)
def test_each_difference_is_classified_as_weakening_or_not(
    declared: dict[str, object], actual: dict[str, object], weakens: bool
) -> None:
    [difference] = differences(config(**declared), config(**actual))
    assert (difference.field, difference.weakens) == (next(iter(declared)), weakens)


def test_a_stream_as_declared_has_no_difference() -> None:
    assert differences(config(), config()) == []


# --- a real three-node cluster ---------------------------------------------------------------


@pytest.fixture
async def cluster() -> AsyncIterator[Settings]:
    """Three NATS nodes as `mediai up` clusters them (MEDIAI_NATS_NODES=3, streams R3), new for
    each test (a stream deleted and made again at once can trip over its own leftovers on a
    peer)."""
    base = Path(tempfile.mkdtemp(prefix="mediai-nats-cluster-"))
    settings = stack_settings(base, nats_nodes=3, nats_replicas=3)
    supervisor = Supervisor(settings.host, base / "logs")
    try:
        # Each node is ready once an R3 stream can be created through it.
        await supervisor.start_together(nats_parts(settings))
        yield settings
    finally:
        await supervisor.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def js(cluster: Settings) -> AsyncIterator[JetStreamContext]:
    """A JetStream client on the cluster."""
    bus = await connect_bus(cluster, "tests", streams="skip")
    try:
        yield bus.js
    finally:
        await bus.close()


def with_(settings: Settings, **changes: object) -> Settings:
    return msgspec.structs.replace(settings, **changes)


async def start_a_process(settings: Settings) -> None:
    """What the operator does at start (``mediai up``): connect, creating missing streams."""
    bus = await connect_bus(settings, "tests", streams="create")
    await bus.close()


async def replicas(js: JetStreamContext) -> dict[str, int]:
    return {str(i.config.name): int(i.config.num_replicas or 0) for i in await js.streams_info()}


async def mediai(settings: Settings, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environ = {
        "PATH": "/usr/bin:/bin",
        "MEDIAI_DATA_DIR": str(settings.data_dir),  # the operator's NATS login
        "NATS_URL": settings.nats_url,
        "DATABASE_URL": settings.database_url,
        "MEDIAI_NATS_REPLICAS": str(settings.nats_replicas),
        "MEDIAI_DEADLETTER_RETENTION": f"{settings.deadletter_retention}s",
    }
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "deploy", *args],
        env=environ,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


async def test_a_process_creates_the_missing_streams_as_declared(
    cluster: Settings, js: JetStreamContext
) -> None:
    await start_a_process(cluster)
    assert await replicas(js) == {"MEDIAI_EVENTS": 3, "MEDIAI_PHI": 3, "MEDIAI_DEADLETTER": 3}
    dead = (await js.stream_info("MEDIAI_DEADLETTER")).config
    assert (dead.max_age, dead.max_bytes, dead.discard) == (30 * DAY, GIB, DiscardPolicy.OLD)
    assert (await js.stream_info("MEDIAI_EVENTS")).config.max_age == 0  # kept for audits


async def test_a_service_creates_no_stream_and_says_which_are_missing(
    cluster: Settings, js: JetStreamContext, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="shared.streams"):
        bus = await connect_bus(cluster, "tests")  # a service's start: check only
        await bus.close()
    assert await replicas(js) == {}
    lines = [r.getMessage() for r in caplog.records if r.name == "shared.streams"]
    assert len(lines) == 3
    assert all("is missing; run 'mediai streams apply'" in line for line in lines)


async def test_a_process_with_weaker_settings_leaves_the_streams_alone_and_says_so(
    cluster: Settings, js: JetStreamContext, caplog: pytest.LogCaptureFixture
) -> None:
    await start_a_process(cluster)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="shared.streams"):
        # A CLI run without the production environment: R1 and a week of dead letters.
        await start_a_process(with_(cluster, nats_replicas=1, deadletter_retention=7 * 86400))

    assert await replicas(js) == {"MEDIAI_EVENTS": 3, "MEDIAI_PHI": 3, "MEDIAI_DEADLETTER": 3}
    assert (await js.stream_info("MEDIAI_DEADLETTER")).config.max_age == 30 * DAY
    lines = [r.getMessage() for r in caplog.records if r.name == "shared.streams"]
    assert len(lines) == 3  # one per stream
    [dead] = [line for line in lines if "MEDIAI_DEADLETTER" in line]
    assert "num_replicas declared 1, actual 3" in dead
    assert "max_age declared 7d, actual 30d" in dead
    assert "run 'mediai streams apply'" in dead


async def test_streams_shows_each_stream_its_contents_and_its_differences(
    cluster: Settings, js: JetStreamContext, tmp_path: Path
) -> None:
    await start_a_process(cluster)
    bus = await connect_bus(cluster, "tests", streams="skip")
    try:
        for room in ("a", "b"):
            await bus.publish(issued(room), tenant="t-streams", key=room)
    finally:
        await bus.close()

    result = await mediai(with_(cluster, nats_replicas=1), "streams", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    [events] = [line for line in lines if line.startswith("MEDIAI_EVENTS")]
    assert "file R3" in events and "max_age unlimited" in events and "2 messages" in events
    [dead] = [line for line in lines if line.startswith("MEDIAI_DEADLETTER")]
    assert "max_age 30d" in dead and "max_bytes 1GiB" in dead
    differs = [line for line in lines if "differs:" in line]
    assert len(differs) == 3
    assert all("num_replicas declared 1, actual 3 (applying it weakens" in d for d in differs)
    assert "run 'mediai streams apply' to apply the declaration" in lines
    assert "outbox: unknown (Postgres unreachable" in result.stdout


async def test_apply_refuses_to_weaken_in_one_line_unless_allowed(
    cluster: Settings, js: JetStreamContext, tmp_path: Path
) -> None:
    await start_a_process(cluster)
    weaker = with_(cluster, nats_replicas=1)

    refused = await mediai(weaker, "streams", "apply", cwd=tmp_path)

    assert refused.returncode == 1
    [line] = refused.stderr.splitlines()
    assert line.startswith("mediai: not applied, it would weaken MEDIAI_EVENTS num_replicas 3 -> 1")
    assert line.endswith("run 'mediai streams apply --allow-weaken' to apply it anyway")
    assert await replicas(js) == {"MEDIAI_EVENTS": 3, "MEDIAI_PHI": 3, "MEDIAI_DEADLETTER": 3}

    allowed = await mediai(weaker, "streams", "apply", "--allow-weaken", cwd=tmp_path)

    assert allowed.returncode == 0, allowed.stderr
    assert allowed.stdout.splitlines() == [
        f"{name}: num_replicas 3 -> 1 (weakens)"
        for name in ("MEDIAI_EVENTS", "MEDIAI_PHI", "MEDIAI_DEADLETTER")
    ]
    assert await replicas(js) == {"MEDIAI_EVENTS": 1, "MEDIAI_PHI": 1, "MEDIAI_DEADLETTER": 1}


async def test_apply_creates_and_strengthens_without_asking(
    cluster: Settings, js: JetStreamContext, tmp_path: Path
) -> None:
    # Streams made by a process started as R1, keeping dead letters a week; then PHI is lost.
    await start_a_process(with_(cluster, nats_replicas=1, deadletter_retention=7 * 86400))
    await js.delete_stream("MEDIAI_PHI")

    result = await mediai(cluster, "streams", "apply", cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "MEDIAI_EVENTS: num_replicas 1 -> 3",
        "created MEDIAI_PHI",
        "MEDIAI_DEADLETTER: num_replicas 1 -> 3",
        "MEDIAI_DEADLETTER: max_age 7d -> 30d",
    ]
    assert await replicas(js) == {"MEDIAI_EVENTS": 3, "MEDIAI_PHI": 3, "MEDIAI_DEADLETTER": 3}
    assert (await js.stream_info("MEDIAI_DEADLETTER")).config.max_age == 30 * DAY
    again = await mediai(cluster, "streams", "apply", cwd=tmp_path)
    assert again.stdout.strip() == "every stream matches its declaration"


async def test_a_change_nats_refuses_is_one_line(
    cluster: Settings, js: JetStreamContext, tmp_path: Path
) -> None:
    declared = stream_configs(cluster)[0]
    await js.add_stream(declared.evolve(storage=StorageType.MEMORY))

    result = await mediai(cluster, "streams", "apply", "--allow-weaken", cwd=tmp_path)

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "mediai: MEDIAI_EVENTS: NATS refused the change: "
        "stream configuration update can not change storage type"
    ]
    assert (await js.stream_info("MEDIAI_EVENTS")).config.storage == StorageType.MEMORY


def issued(room: str) -> TokenIssued:
    return TokenIssued(
        room=room,
        identity="p1",
        can_publish=True,
        can_subscribe=True,
        ttl_seconds=60,
        expires_at=datetime(2026, 1, 1, tzinfo=UTC),
    )


async def test_a_tenant_made_while_nats_is_away_is_announced_by_the_next_apply(
    cluster: Settings, js: JetStreamContext, tmp_path: Path, stack: StackState
) -> None:
    # The shared stack's PostgreSQL; this test's own NATS cluster, first unreachable.
    database = with_(cluster, database_url=stack.database_url)
    away = with_(database, nats_url=f"nats://127.0.0.1:{free_port()}")

    made = await mediai(away, "tenants", "create", "Clínica offline", cwd=tmp_path)

    assert made.returncode == 0, made.stderr
    tenant = made.stdout.splitlines()[0].split()[1]
    [note] = made.stderr.splitlines()  # one line, not a warning per connection attempt
    assert note.startswith("note: the platform's events are not published yet")
    assert note.endswith("the next `mediai streams apply` or `mediai up` publishes them")

    applied = await mediai(database, "streams", "apply", cwd=tmp_path)

    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines()[-1].startswith("published ")
    announced = await stored_events(js, TenantCreated, tenant)
    assert [e.data.tenant_id for e in announced] == [tenant]  # type: ignore[attr-defined]
