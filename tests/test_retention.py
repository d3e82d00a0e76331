"""Retention that holds (issue 10 item 6): the PHI stream and the dead letters forget by age on a
real NATS server, by JetStream's own limits as the streams are declared, with nothing to run."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from deploy.stack import nats_part
from deploy.supervisor import Supervisor
from shared import subjects
from shared.bus import connect_bus
from shared.config import Settings
from shared.events import DEADLETTER_STREAM, PHI_STREAM, DeadLettered
from shared.events.agents import AgentTranscribed
from shared.streams import stream_configs
from tests.support import eventually, stack_settings

SECONDS = 2


@pytest.fixture
async def short_lived() -> AsyncIterator[tuple[Settings, JetStreamContext]]:
    """A NATS server whose streams were declared by a process with a retention of seconds."""
    data_dir = Path(tempfile.mkdtemp(prefix="mediai-retention-"))
    settings = stack_settings(
        data_dir, phi_retention=SECONDS, deadletter_retention=SECONDS, services=()
    )
    supervisor = Supervisor(settings.host, data_dir / "logs")
    await supervisor.start(nats_part(settings))
    bus = await connect_bus(settings, "tests")  # declares the streams, as every process does
    try:
        yield settings, bus.js
    finally:
        await bus.close()
        await supervisor.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def test_the_phi_stream_keeps_personal_health_data_only_for_its_retention() -> None:
    declared = {c.name: c for c in stream_configs(Settings())}
    assert declared["MEDIAI_PHI"].max_age == 30 * 86400  # MEDIAI_PHI_RETENTION
    assert declared["MEDIAI_DEADLETTER"].max_age == 30 * 86400  # MEDIAI_DEADLETTER_RETENTION
    assert declared["MEDIAI_DEADLETTER"].max_bytes == 1 << 30
    assert declared["MEDIAI_EVENTS"].max_age == 0  # billing audits replay it: erased by keys


async def test_messages_older_than_the_retention_are_gone(
    short_lived: tuple[Settings, JetStreamContext],
) -> None:
    _, js = short_lived
    phi = subjects.key_filter(AgentTranscribed, tenant="tretention1", key="d1")
    dead = subjects.key_filter(DeadLettered, tenant="system", key="c1")
    for subject in (phi, dead):
        await js.publish(subject, b'{"sealed": "as it would be"}')
    phi_stream, dead_stream = (subjects.stream_name(s) for s in (PHI_STREAM, DEADLETTER_STREAM))
    for name in (phi_stream, dead_stream):
        assert (await js.stream_info(name)).state.messages == 1

    async def both_forgotten() -> bool:
        held = [(await js.stream_info(name)).state.messages for name in (phi_stream, dead_stream)]
        return held == [0, 0]

    # JetStream removes them itself, within moments of their age passing the limit.
    await eventually(both_forgotten, timeout=SECONDS * 10, step=0.2)
