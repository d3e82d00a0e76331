"""Read endpoints through the gateway: MediAI's dispatcher against a bare app with the same SQL.

Starts a stack with the dispatcher (NATS, Postgres, LiveKit, the key service, the gateway) as
``mediai up`` does, tracing on (exported over OTLP to a sink in this process at
``--sample-ratio``) and the Prometheus metrics on, and makes ``--dispatches`` dispatches in one
room (no agent workers: a worker host's load report on the bus gives the dispatcher room, as in
the fault suite). Then the bare app (``bench.bare_reads``: the same table, the same SQL, the same
public fields; no API key, no tracing, no metrics) behind a second Caddy running the same
Caddyfile. For each endpoint, ``GET /v1/agents/{id}`` and ``GET /v1/agents?room=`` (all the
room's dispatches), bombardier with ``--connections`` clients for ``--duration`` seconds per run,
MediAI and bare interleaved with the order alternating, after a warm-up of each: requests/s,
p50/p90/p99, errors, CPU per request of each process a side runs on, the ratio, and a JSON record.

Run: uv run python -m bench.read_throughput [--runs 3] [--duration 8] [--connections 64].
Prints figures; never fails on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from pathlib import Path

import asyncpg
import httpx
import msgspec

from bench.records import RESULTS, write_record
from bench.token_throughput import (
    Side,
    bombardier,
    load,
    median_side,
    row,
    start_bare,
)
from bench.traced import traced_stack
from shared.tenants import authenticate
from tests.faults.support import report_room_for_dispatches

ROOM = "consulta-leitura"


async def dispatches(gateway: str, key: str, count: int) -> list[str]:
    """``count`` dispatches in ROOM, made through the API: their ids."""
    async with httpx.AsyncClient(
        base_url=gateway, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as api:
        made = []
        for _ in range(count):
            answer = await api.post("/v1/agents", json={"room": ROOM, "role": "generic"})
            answer.raise_for_status()
            made.append(answer.json()["id"])
        return made


async def main(
    runs: int, duration: float, connections: int, count: int, sample_ratio: float, output: Path
) -> None:
    bombardier()
    async with traced_stack(
        ["dispatcher"], sample_ratio=sample_ratio, agent_pool_min=0, agent_pool_max=0
    ) as (settings, stack, state):
        key = state.dev_api_key
        assert key is not None
        connection = await asyncpg.connect(settings.database_url)
        try:
            tenant = await authenticate(connection, key)  # type: ignore[arg-type]
        finally:
            await connection.close()
        assert tenant is not None
        await report_room_for_dispatches(settings)
        ids = await dispatches(state.gateway_url, key, count)
        bare = await start_bare(
            stack, settings, "bare", tenant.id, module="bench.bare_reads", service="dispatcher"
        )
        pids = {p.name: p.process.pid for p in stack.supervisor.parts if p.process}
        gateways = {
            "mediai": (
                state.gateway_url,
                {
                    "server": pids["dispatcher"],
                    "gateway": pids["gateway"],
                    "postgres": pids["postgres"],
                },
            ),
            "bare": (
                bare,
                {
                    "server": pids["bare"],
                    "gateway": pids["gateway-bare"],
                    "postgres": pids["postgres"],
                },
            ),
        }
        endpoints = {
            "GET /v1/agents/{id}": f"/v1/agents/{ids[0]}",
            "GET /v1/agents?room=": f"/v1/agents?room={ROOM}",
        }
        record_endpoints: dict[str, object] = {}
        for endpoint, path in endpoints.items():

            async def run(name: str, seconds: float, path: str = path) -> Side:
                url, side_pids = gateways[name]
                return await load(
                    url + path, key, side_pids, seconds, connections, method="GET", body=""
                )

            for name in gateways:  # warm-up
                await run(name, min(duration, 3))
            results: dict[str, list[Side]] = {"mediai": [], "bare": []}
            for number in range(runs):
                for name in ("mediai", "bare") if number % 2 == 0 else ("bare", "mediai"):
                    results[name].append(await run(name, duration))
            ratios = [
                m.rps / b.rps for m, b in zip(results["mediai"], results["bare"], strict=True)
            ]
            medians = {name: median_side(sides) for name, sides in results.items()}
            print(
                f"\n{endpoint} ({count} dispatches in the room), {connections} connections, "
                f"{duration:.0f} s x {runs} runs (medians):"
            )
            for name in ("mediai", "bare"):
                print(row(name, medians[name]))
            print(
                f"  ratio MediAI / bare (req/s): median {statistics.median(ratios):.2f}"
                f" (runs: {', '.join(f'{r:.2f}' for r in ratios)})"
            )
            record_endpoints[endpoint] = {
                "ratio_rps_median": statistics.median(ratios),
                "ratios_rps": ratios,
                "median": {name: msgspec.to_builtins(side) for name, side in medians.items()},
            }
        write_record(
            output,
            {
                "benchmark": "read_throughput",
                "connections": connections,
                "duration_seconds": duration,
                "runs": runs,
                "dispatches_in_room": count,
                "trace_sample_ratio": sample_ratio,
                "endpoints": record_endpoints,
            },
        )
        print(f"record: {output}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--dispatches", type=int, default=20)
    parser.add_argument("--sample-ratio", type=float, default=0.1, help="MEDIAI_TRACE_SAMPLE_RATIO")
    parser.add_argument("--output", type=Path, default=RESULTS / "read_throughput.json")
    args = parser.parse_args()
    asyncio.run(
        main(
            args.runs,
            args.duration,
            args.connections,
            args.dispatches,
            args.sample_ratio,
            args.output,
        )
    )
