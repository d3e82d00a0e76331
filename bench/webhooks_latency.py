"""Webhook -> event stored, at a fixed rate: MediAI's webhooks service against a bare app.

Starts a stack with the webhooks service alone (NATS, Postgres, LiveKit, the gateway) as
``mediai up`` does, then the bare app (``bench.bare_webhooks``: the same signature check,
one nats-py ``js.publish`` per webhook, nothing else) behind a second Caddy running the same
Caddyfile; both served by uvicorn with the same options, on the same NATS. For each rate,
signed webhooks are sent open-loop (``bench.webhook_load``: on a schedule, whatever the answers;
latency from when each was due to its 200, which comes after JetStream's ack) through each
gateway for ``--seconds``, MediAI and bare interleaved per run, the order alternating, after a
warm-up of each; tracing exports over OTLP at ``--sample-ratio`` (0.1). Per rate and side: achieved rate, p50/p90/p99/max, errors, the server's CPU
per webhook; the ratios MediAI / bare of p50 and p99; a JSON record (``--output``).

Run: uv run python -m bench.webhooks_latency [--rates 100 500 1000] [--runs 3] [--seconds 10].
Prints figures; never fails on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import statistics
import sys
from pathlib import Path

import msgspec

from bench.cpu import tree_cpu_seconds
from bench.records import RESULTS, write_record
from bench.token_throughput import start_bare
from bench.traced import traced_stack
from deploy.stack import child_environ
from shared.config import Settings

PATH = "/v1/webhooks/livekit"


class Side(msgspec.Struct, kw_only=True):
    """One open-loop run against one side at one rate."""

    rate: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    webhooks: int
    errors: int
    send_lag_p99_ms: float
    client_cpu_ms_per_webhook: float
    cpu_ms_per_webhook: float
    # What the errors were: an HTTP status, or the client's exception (a refused connection).
    error_kinds: dict[str, int] = {}


async def load(settings: Settings, url: str, pid: int, rate: float, seconds: float) -> Side:
    """One open-loop run from a process of its own (this one's loop runs the stack)."""
    before = tree_cpu_seconds(pid)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.webhook_load",
        url,
        str(rate),
        str(seconds),
        env=child_environ(settings),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    cpu = tree_cpu_seconds(pid) - before
    result = json.loads(out)
    return Side(
        **{k: v for k, v in result.items() if k in Side.__struct_fields__},
        cpu_ms_per_webhook=cpu * 1000 / max(result["webhooks"], 1),
    )


def median_side(sides: list[Side]) -> Side:
    kinds: collections.Counter[str] = collections.Counter()
    for side in sides:
        kinds.update(side.error_kinds)
    return Side(
        **{
            field: statistics.median(getattr(s, field) for s in sides)
            for field in Side.__struct_fields__
            if field != "error_kinds"
        },
        error_kinds=dict(kinds),
    )


def row(name: str, side: Side) -> str:
    return (
        f"  {name:<7} {side.rate:6.0f}/s  p50 {side.p50_ms:6.2f}  p90 {side.p90_ms:6.2f}"
        f"  p99 {side.p99_ms:7.2f}  max {side.max_ms:7.2f} ms  errors {side.errors:.0f}"
        f"{side.error_kinds or ''}"
        f"  CPU {side.cpu_ms_per_webhook:4.2f} ms/webhook"
        f"  (client {side.client_cpu_ms_per_webhook:4.2f}, send lag p99 {side.send_lag_p99_ms:4.1f} ms)"
    )


async def main(
    rates: list[float],
    runs: int,
    seconds: float,
    sample_ratio: float,
    output: Path,
    keep_logs: bool = False,
) -> None:
    load_before = os.getloadavg()
    async with traced_stack(["webhooks"], sample_ratio=sample_ratio, keep_logs=keep_logs) as (
        settings,
        stack,
        _,
    ):
        # The bare app behind a second gateway: the same Caddyfile, its webhooks upstream the app.
        bare_gateway = await start_bare(
            stack, settings, "bare-webhooks", module="bench.bare_webhooks", services=("webhooks",)
        )
        pids = {p.name: p.process.pid for p in stack.supervisor.parts if p.process}
        sides = {
            "mediai": (f"{settings.gateway_url}{PATH}", pids["webhooks"]),
            "bare": (f"{bare_gateway}{PATH}", pids["bare-webhooks"]),
        }
        for url, pid in sides.values():  # warm-up: connections, code paths
            await load(settings, url, pid, min(rates), 2)
        results: dict[float, dict[str, list[Side]]] = {}
        for rate in rates:
            results[rate] = {"mediai": [], "bare": []}
            for run in range(runs):
                order = ["mediai", "bare"] if run % 2 == 0 else ["bare", "mediai"]
                for name in order:
                    url, pid = sides[name]
                    results[rate][name].append(await load(settings, url, pid, rate, seconds))
                print(f"{rate:.0f}/s, run {run + 1}/{runs}:", flush=True)
                for name in ("mediai", "bare"):
                    print(row(name, results[rate][name][-1]), flush=True)
        summary: dict[str, object] = {}
        print(
            f"\nwebhook -> event stored (200 after JetStream's ack), through the gateway,"
            f" open loop, {seconds:.0f} s x {runs} runs per rate (medians):"
        )
        for rate, by_side in results.items():
            medians = {name: median_side(s) for name, s in by_side.items()}
            p50 = [
                m.p50_ms / b.p50_ms for m, b in zip(by_side["mediai"], by_side["bare"], strict=True)
            ]
            p99 = [
                m.p99_ms / b.p99_ms for m, b in zip(by_side["mediai"], by_side["bare"], strict=True)
            ]
            print(f" {rate:.0f} webhooks/s:")
            for name in ("mediai", "bare"):
                print(row(name, medians[name]))
            print(
                f"  ratio MediAI / bare: p50 {statistics.median(p50):.2f}"
                f" (runs {', '.join(f'{r:.2f}' for r in p50)}), p99 {statistics.median(p99):.2f}"
                f" (runs {', '.join(f'{r:.2f}' for r in p99)})"
            )
            summary[f"{rate:.0f}"] = {
                "ratio_p50_median": statistics.median(p50),
                "ratio_p99_median": statistics.median(p99),
                "ratios_p50": p50,
                "ratios_p99": p99,
                "median": {name: msgspec.to_builtins(side) for name, side in medians.items()},
                "runs_detail": {name: msgspec.to_builtins(s) for name, s in by_side.items()},
            }
        record = {
            "benchmark": "webhooks_latency",
            # Others' work on the same cores moves these figures most: say how much there was.
            "load_average_before": load_before,
            "load_generator": "bench.webhook_load (open loop, asyncio streams under uvloop)",
            "seconds_per_run": seconds,
            "trace_sample_ratio": sample_ratio,
            "runs": runs,
            "rates": summary,
        }
        write_record(output, record)
        print(f"record: {output}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[100.0, 500.0, 1000.0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sample-ratio", type=float, default=0.1, help="MEDIAI_TRACE_SAMPLE_RATIO")
    parser.add_argument("--output", type=Path, default=RESULTS / "webhooks_latency.json")
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the stack's logs (why a webhook got 503)"
    )
    args = parser.parse_args()
    asyncio.run(
        main(args.rates, args.runs, args.seconds, args.sample_ratio, args.output, args.keep_logs)
    )
