"""How the local stack's throughput grows from one node of each to two (issue 14, item 6).

Starts two stacks side by side, as ``mediai up`` and ``mediai up --cluster`` start them: one node
of everything, and the cluster topology (3 NATS nodes with R3 streams, 2 LiveKit nodes on Redis,
2 replicas of each service behind the gateway); each with the webhooks, rooms and dispatcher
services and no agent workers (a worker host's load report on the bus gives the dispatcher room,
as in the fault suite: agents are measured by ``bench.agent_capacity``), tracing at the default
sample ratio (every request). Then, ``--runs`` rounds,
the two interleaved with the order alternating:

- webhooks/s: ``--webhooks`` signed ``participant_joined`` webhooks through the gateway,
  ``--concurrency`` in flight; each answered once JetStream has stored it (R3: on two of three
  nodes);
- dispatches/s: ``--dispatches`` ``POST /v1/agents`` through the gateway, ``--concurrency`` in
  flight; each answered once the dispatch is on the log and LiveKit holds it.

Prints per side the rate, p50/p90/p99 and errors, the ratio cluster / one node, CPU seconds per
request of all the stack's processes, and writes ``bench/results/cluster_throughput.json``.

Run: uv run python -m bench.cluster_throughput [--runs 3]. Prints figures; never fails on speed.
On one machine the two topologies share its cores: the ratio says what the cluster's
replication and routing cost there, not what more hosts would add (docs/scaling.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
from google.protobuf.json_format import MessageToJson

from bench.cpu import tree_cpu_seconds
from bench.records import RESULTS, write_record
from deploy.cluster import TOPOLOGY
from services.webhooks.signing import sign
from tests.faults.support import FaultStack, fault_stack, now_seconds, participant_hook, unique

SERVICES = ["webhooks", "rooms", "dispatcher"]
ONE_NODE: dict[str, object] = {"nats_nodes": 1, "livekit_nodes": 1, "service_replicas": 1}
CLUSTER: dict[str, object] = {**TOPOLOGY, "agent_pools": 1}


async def timed_all(
    calls: list[Callable[[], Awaitable[int]]], concurrency: int
) -> tuple[float, list[float], dict[int, int]]:
    """Run ``calls`` (each answers an HTTP status) with ``concurrency`` in flight: (requests/s
    answered 2xx, latencies in ms of those, how many of each other status)."""
    pending = iter(calls)
    latencies: list[float] = []
    errors: dict[int, int] = {}

    async def worker() -> None:
        for call in pending:
            began = time.perf_counter()
            status = await call()
            if 200 <= status < 300:
                latencies.append((time.perf_counter() - began) * 1000)
            else:
                errors[status] = errors.get(status, 0) + 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies) / (time.perf_counter() - began), latencies, errors


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


def summary(
    rate: float, latencies: list[float], errors: dict[int, int], cpu_ms: float
) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "per_second": rate,
        "p50_ms": statistics.median(ordered) if ordered else 0.0,
        "p90_ms": percentile(ordered, 0.9),
        "p99_ms": percentile(ordered, 0.99),
        "errors": sum(errors.values()),
        **{f"status_{status}": count for status, count in sorted(errors.items())},
        "cpu_ms_per_request": cpu_ms,
    }


class Side:
    """One running topology and its gateway client."""

    def __init__(self, name: str, stack: FaultStack, client: httpx.AsyncClient) -> None:
        self.name, self.stack, self.client = name, stack, client

    def cpu(self) -> dict[str, float]:
        """CPU seconds of each process of the stack so far, by part."""
        parts = self.stack.supervisor.parts
        return {p.name: tree_cpu_seconds(p.process.pid) for p in parts if p.process is not None}

    async def webhooks(self, count: int, concurrency: int) -> dict[str, float]:
        settings, client = self.stack.settings, self.client
        room = unique("bench")

        def one() -> Callable[[], Awaitable[int]]:
            at = now_seconds()
            hook = participant_hook(
                "participant_joined", self.stack.tenant, room, unique("PA"), at=at, joined_at=at
            )
            body = MessageToJson(hook).encode()

            async def call() -> int:
                token = sign(body, settings.livekit_api_key, settings.livekit_api_secret)
                answer = await client.post(
                    "/v1/webhooks/livekit",
                    content=body,
                    headers={"Authorization": token, "Content-Type": "application/webhook+json"},
                )
                return answer.status_code

            return call

        return await self._measure([one() for _ in range(count)], concurrency)

    async def dispatches(self, count: int, concurrency: int) -> dict[str, float]:
        client, key = self.client, self.stack.api_key

        def one() -> Callable[[], Awaitable[int]]:
            room = f"bench-{uuid.uuid4().hex[:10]}"

            async def call() -> int:
                answer = await client.post(
                    "/v1/agents",
                    json={"room": room, "role": "generic"},
                    headers={"Authorization": f"Bearer {key}"},
                )
                return answer.status_code

            return call

        return await self._measure([one() for _ in range(count)], concurrency)

    async def _measure(
        self, calls: list[Callable[[], Awaitable[int]]], concurrency: int
    ) -> dict[str, float]:
        before = self.cpu()
        rate, latencies, errors = await timed_all(calls, concurrency)
        after = self.cpu()
        by_part = {
            name: (after[name] - before[name]) * 1000 / max(len(latencies), 1) for name in after
        }
        figures = summary(rate, latencies, errors, sum(by_part.values()))
        # The processes that spent most, so a slow side says where its CPU went.
        for name, ms in sorted(by_part.items(), key=lambda item: -item[1])[:4]:
            figures[f"cpu_ms_{name}"] = ms
        return figures


@contextlib.asynccontextmanager
async def running(name: str, topology: dict[str, object]) -> AsyncIterator[Side]:
    started = time.monotonic()
    async with (
        fault_stack(
            SERVICES, environment=None, agent_pool_min=0, agent_pool_max=0, **topology
        ) as stack,
        httpx.AsyncClient(base_url=stack.state.gateway_url, timeout=30) as client,
    ):
        print(f"{name}: ready in {time.monotonic() - started:.0f} s", flush=True)
        yield Side(name, stack, client)


def line(name: str, figures: dict[str, float]) -> str:
    return (
        f"    {name:<9} {figures['per_second']:7.0f}/s  p50 {figures['p50_ms']:6.1f} ms"
        f"  p90 {figures['p90_ms']:6.1f} ms  p99 {figures['p99_ms']:6.1f} ms"
        f"  CPU {figures['cpu_ms_per_request']:5.2f} ms/req  errors {figures['errors']:.0f}"
        + "".join(f" ({k}: {v:.0f})" for k, v in figures.items() if k.startswith("status_"))
        + "\n              most CPU (ms/req): "
        + ", ".join(
            f"{k.removeprefix('cpu_ms_')} {v:.2f}"
            for k, v in figures.items()
            if k.startswith("cpu_ms_") and k != "cpu_ms_per_request"
        )
    )


async def main(runs: int, webhooks: int, dispatches: int, concurrency: int, output: Path) -> None:
    async with running("one node", ONE_NODE) as one, running("cluster", CLUSTER) as cluster:
        sides = [one, cluster]
        for side in sides:  # warm-up: connections, code paths, the gateway's upstreams
            await side.webhooks(100, concurrency)
            await side.dispatches(20, concurrency)
        results: dict[str, dict[str, list[dict[str, float]]]] = {
            kind: {side.name: [] for side in sides} for kind in ("webhooks", "dispatches")
        }
        for run in range(runs):
            order = sides if run % 2 == 0 else sides[::-1]
            for side in order:
                results["webhooks"][side.name].append(await side.webhooks(webhooks, concurrency))
                results["dispatches"][side.name].append(
                    await side.dispatches(dispatches, concurrency)
                )
            print(f"run {run + 1}/{runs}:", flush=True)
            for kind, by_side in results.items():
                print(f"  {kind}")
                for side in sides:
                    print(line(side.name, by_side[side.name][-1]), flush=True)
    medians: dict[str, dict[str, dict[str, float]]] = {
        kind: {
            # A process among the most spending in some runs only: its median over those runs.
            name: {
                field: statistics.median(r[field] for r in rows if field in r)
                for field in {f for r in rows for f in r}
            }
            for name, rows in by_side.items()
        }
        for kind, by_side in results.items()
    }
    print(f"\nmedians of {runs} runs, {concurrency} in flight:")
    ratios: dict[str, float] = {}
    for kind, of_kind in medians.items():
        ratios[kind] = of_kind["cluster"]["per_second"] / of_kind["one node"]["per_second"]
        print(f"  {kind}: cluster / one node {ratios[kind]:.2f}x")
        for name, figures in of_kind.items():
            print(line(name, figures))
    record = {
        "benchmark": "cluster_throughput",
        "topologies": {"one node": ONE_NODE, "cluster": CLUSTER},
        "runs": runs,
        "concurrency": concurrency,
        "webhooks_per_run": webhooks,
        "dispatches_per_run": dispatches,
        "ratio_cluster_to_one_node": ratios,
        "median": medians,
        "runs_detail": results,
    }
    write_record(output, record)
    print(f"record: {output}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--webhooks", type=int, default=1000)
    parser.add_argument("--dispatches", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--output", type=Path, default=RESULTS / "cluster_throughput.json")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.webhooks, args.dispatches, args.concurrency, args.output))
