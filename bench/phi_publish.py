"""What sealing personal data costs on the publish path.

Starts a stack with the key service only (NATS, Postgres, LiveKit, keys, gateway), then
publishes transcript segments (``AgentTranscribed``, one personal field of ~90 characters), one
at a time as the agent's reporter does, in alternating blocks:

- sealed: the event as produced, sealed on publish with the (cached) tenant key;
- pre-sealed: the same event sealed once beforehand, so publish only checks it (the same bytes
  on the wire, no encryption): the bare cost of publishing;

and times the sealing alone, an event with nothing personal (no key, no work), and a key
service round trip (what a cache miss costs).

Run: uv run python -m bench.phi_publish [--count 2000] [--runs 3]. Prints figures; never fails.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from deploy.stack import Stack
from shared.bus import Bus, connect_bus
from shared.events import Envelope, envelope, new_event_id
from shared.events.agents import AgentTranscribed, AgentUsageReported
from shared.keys import KeyCache
from tests.support import stack_settings

TENANT = "tbench00000"
TEXT = "Estou com dor de cabeça desde segunda-feira, piora à noite e melhora com dipirona."


def transcript(text: str = TEXT) -> AgentTranscribed:
    return AgentTranscribed(
        dispatch_id="d-bench",
        room="consulta-bench",
        role="intake",
        segment_id="s",
        speaker="user",
        participant_identity="paciente-1",
        text=text,
        spoken_at=datetime.now(UTC),
    )


def fresh(bus: Bus, data: AgentTranscribed | AgentUsageReported) -> Envelope:
    return envelope(data, source=bus.source, tenant=TENANT, subject="d-bench")


async def timed(samples: int, step: Callable[[], Awaitable[object]]) -> list[float]:
    found = []
    for _ in range(samples):
        began = time.perf_counter()
        await step()
        found.append((time.perf_counter() - began) * 1e6)
    return found


def line(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[int(len(ordered) * 0.9) - 1]
    return f"  {name:<36} p50 {statistics.median(ordered):8.1f} µs  p90 {p90:8.1f} µs"


async def main(count: int, runs: int) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="mediai-bench-"))
    settings = stack_settings(data_dir)
    stack = Stack(settings, services=[])  # the key service always runs
    await stack.start()
    bus = await connect_bus(settings, "bench")
    try:
        presealed = await bus.phi.seal(fresh(bus, transcript()))  # warms the key cache too

        async def sealed_publish() -> None:
            await bus.publish_envelope(fresh(bus, transcript()))

        async def presealed_publish() -> None:
            await bus.publish_envelope(msgspec.structs.replace(presealed, id=new_event_id()))

        usage = AgentUsageReported(
            dispatch_id="d-bench",
            room="consulta-bench",
            role="intake",
            period_start=datetime.now(UTC),
            period_end=datetime.now(UTC),
        )
        for _ in range(200):  # warm up connections and code paths
            await sealed_publish()
            await presealed_publish()
        sealed: list[float] = []
        bare: list[float] = []
        block = 100
        for _ in range(runs):
            for _ in range(count // block):
                sealed += await timed(block, sealed_publish)
                bare += await timed(block, presealed_publish)
        to_seal = iter([fresh(bus, transcript()) for _ in range(count)])
        seal_only = await timed(count, lambda: bus.phi.seal(next(to_seal)))
        plain = iter([fresh(bus, usage) for _ in range(count)])
        nothing_personal = await timed(count, lambda: bus.phi.seal(next(plain)))

        async def miss() -> None:
            await KeyCache(bus.nc).for_sealing(TENANT, "", "personal")

        misses = await timed(200, miss)
        ratio = statistics.median(sealed) / statistics.median(bare)
        p90 = sorted(sealed)[int(len(sealed) * 0.9) - 1] / sorted(bare)[int(len(bare) * 0.9) - 1]
        print(
            f"AgentTranscribed ({len(TEXT)} characters of text), {runs} run(s) x {count} "
            "publishes each way, alternating blocks of 100:\n"
            f"{line('publish, sealed on publish', sealed)}\n"
            f"{line('publish, pre-sealed (no encryption)', bare)}\n"
            f"  sealed/pre-sealed: p50 x{ratio:.3f}, p90 x{p90:.3f}\n"
            f"{line('seal alone (cached key)', seal_only)}\n"
            f"{line('seal, nothing personal in the event', nothing_personal)}\n"
            f"{line('key service round trip (cache miss)', misses)}"
        )
    finally:
        await bus.close()
        await stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.count, arguments.runs))
