"""``POST /v1/tokens`` through the gateway: MediAI's token service against a bare Litestar app.

Starts a stack with the token service (NATS, Postgres, LiveKit, the key service, token, the
gateway) as ``mediai up`` does, with tracing exporting over OTLP (to a sink in this process, at
``--sample-ratio``, 0.1 by default) and the Prometheus metrics on; then two bare apps
(``bench.bare_token``), each behind its own Caddy running the same Caddyfile: ``bare`` mints the
same JWT and nothing else; ``bare+audit`` also publishes a record of the token to the same
JetStream stream with nats-py and answers after its ack, as MediAI does for ``token_issued`` (on
a NATS that fsyncs every write, that ack is the floor of any durable token path). All are
served by uvicorn with the same options. The load generator is bombardier (built once from the
Go module proxy at a pinned version): ``--connections`` clients for ``--duration`` seconds per
run, the sides interleaved (each first in turn), after a warm-up of each. For each side:
requests/s, latency p50/p90/p99, errors, and CPU time per request of the server and of every
other process that side runs on (gateway, NATS, ...); then the ratios, and a JSON record
(``--output``).

Run: uv run python -m bench.token_throughput [--runs 5] [--duration 10] [--connections 64].
Prints figures; never fails on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import msgspec

from bench.cpu import tree_cpu_seconds
from bench.records import RESULTS, write_record
from bench.traced import OtlpSink, traced_stack
from deploy.gotools import GoTool, build
from deploy.nats import operator_login
from deploy.stack import Stack, child_environ, gateway_part
from deploy.supervisor import Part, http_ready
from shared.bus import OPERATOR_USER
from shared.config import Settings
from tests.support import free_port

BOMBARDIER = GoTool("bombardier", "github.com/codesenberg/bombardier", "v1.2.6", "bombardier")
BODY = json.dumps({"room": "consulta-bench", "identity": "paciente-bench", "name": "Paciente"})


class Side(msgspec.Struct, kw_only=True):
    """One load run against one side."""

    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_ms_per_request: float
    # the server's and every other process this side runs on (gateway, NATS, ...), per request
    cpu_ms_by_part: dict[str, float] = {}


def bombardier() -> Path:
    """The pinned bombardier, built once with ``go install`` into the cache."""
    return build(BOMBARDIER)


async def load(
    url: str,
    key: str,
    pids: dict[str, int],
    duration: float,
    connections: int,
    *,
    method: str = "POST",
    body: str = BODY,
) -> Side:
    """``pids``: the processes this side runs on, the app's server as ``server``."""
    before = {name: tree_cpu_seconds(pid) for name, pid in pids.items()}
    process = await asyncio.create_subprocess_exec(
        str(bombardier()),
        *("-c", str(connections), "-d", f"{duration}s", "-m", method),
        *(("-b", body) if body else ()),
        *("-H", f"Authorization: Bearer {key}", "-H", "Content-Type: application/json"),
        *("-l", "-p", "r", "-o", "json", "--timeout=10s", url),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    cpu = {name: tree_cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    result = json.loads(out)["result"]
    ok = result["req2xx"]
    per_request = {name: seconds * 1000 / max(ok, 1) for name, seconds in cpu.items()}
    latency = result["latency"]["percentiles"]
    return Side(
        rps=ok / result["timeTakenSeconds"],
        p50_ms=latency["50"] / 1000,
        p90_ms=latency["90"] / 1000,
        p99_ms=latency["99"] / 1000,
        requests=ok,
        errors=sum(result[k] for k in ("req1xx", "req3xx", "req4xx", "req5xx", "others")),
        cpu_ms_per_request=per_request["server"],
        cpu_ms_by_part=per_request,
    )


def median_side(sides: list[Side]) -> Side:
    numbers = [field for field in Side.__struct_fields__ if field != "cpu_ms_by_part"]
    return Side(
        **{field: statistics.median(getattr(s, field) for s in sides) for field in numbers},
        cpu_ms_by_part={
            name: statistics.median(s.cpu_ms_by_part[name] for s in sides)
            for name in sides[0].cpu_ms_by_part
        },
    )


def row(name: str, side: Side) -> str:
    return (
        f"  {name:<8} {side.rps:8.0f} req/s  p50 {side.p50_ms:6.1f} ms  p90 {side.p90_ms:6.1f} ms"
        f"  p99 {side.p99_ms:6.1f} ms  CPU {side.cpu_ms_per_request:5.2f} ms/req"
        f"  errors {side.errors:.0f}\n           CPU ms/req by process: "
        + ", ".join(f"{name} {ms:.2f}" for name, ms in side.cpu_ms_by_part.items())
        + f" (all {sum(side.cpu_ms_by_part.values()):.2f})"
    )


async def start_bare(
    stack: Stack,
    settings: Settings,
    name: str,
    *options: str,
    module: str = "bench.bare_token",
    services: tuple[str, ...] = ("token",),
) -> str:
    """A bare app (``module``, run as ``python -m module HOST PORT *options``) behind its own
    gateway running the same Caddyfile, where each of ``services`` routes to it: that
    gateway's URL."""
    port = free_port()
    bare_settings = msgspec.structs.replace(
        settings, **{f"{service}_port": port for service in services}, gateway_port=free_port()
    )
    url = f"http://{settings.host}:{port}"
    env = child_environ(settings) | {
        "BARE_NATS_URL": settings.nats_url,
        "BARE_NATS_USER": OPERATOR_USER,
        "BARE_NATS_PASSWORD": operator_login(settings)["password"],
    }
    app = Part(
        name=name,
        argv=[
            sys.executable,
            "-m",
            module,
            settings.host,
            str(port),
            *options,
        ],
        url=url,
        env=env,
        ready=lambda: http_ready(f"{url}/healthz"),
    )
    await stack.supervisor.start_together([app])
    await stack.supervisor.start_together(
        [replace(gateway_part(bare_settings), name=f"gateway-{name}")]
    )
    return bare_settings.gateway_url


async def main(
    runs: int, duration: float, connections: int, sample_ratio: float, output: Path
) -> None:
    bombardier()
    async with traced_stack(["token"], sample_ratio=sample_ratio) as (settings, stack, state):
        bare = await start_bare(stack, settings, "bare") + "/v1/tokens"
        bare_audit = await start_bare(stack, settings, "bare-audit", "--audit") + "/v1/tokens"
        pids = {p.name: p.process.pid for p in stack.supervisor.parts if p.process}
        sides = {
            "mediai": (
                f"{settings.gateway_url}/v1/tokens",
                {
                    "server": pids["token"],
                    "gateway": pids["gateway"],
                    "nats": pids["nats"],
                    "keys": pids["keys"],
                    "postgres": pids["postgres"],
                },
            ),
            "bare": (bare, {"server": pids["bare"], "gateway": pids["gateway-bare"]}),
            "bare+audit": (
                bare_audit,
                {
                    "server": pids["bare-audit"],
                    "gateway": pids["gateway-bare-audit"],
                    "nats": pids["nats"],
                },
            ),
        }
        names = list(sides)
        key = state.dev_api_key
        for url, side_pids in sides.values():  # warm-up: connections, caches, code paths
            await load(url, key, side_pids, min(duration, 3), connections)
        results: dict[str, list[Side]] = {name: [] for name in names}
        for run in range(runs):
            for name in names[run % 3 :] + names[: run % 3]:  # each side first in turn
                url, side_pids = sides[name]
                results[name].append(await load(url, key, side_pids, duration, connections))
            print(f"run {run + 1}/{runs}:", flush=True)
            for name in names:
                print(row(name, results[name][-1]), flush=True)
        ratios = {
            baseline: [
                m.rps / b.rps for m, b in zip(results["mediai"], results[baseline], strict=True)
            ]
            for baseline in ("bare", "bare+audit")
        }
        medians = {name: median_side(sides_) for name, sides_ in results.items()}
        print(
            f"\nPOST /v1/tokens through the gateway, {connections} connections,"
            f" {duration:.0f} s x {runs} runs (medians):"
        )
        for name in names:
            print(row(name, medians[name]))
        for baseline, per_run in ratios.items():
            print(
                f"  ratio MediAI / {baseline} (req/s): median {statistics.median(per_run):.2f}"
                f" (runs: {', '.join(f'{r:.2f}' for r in per_run)}); CPU per request, server"
                f" {medians['mediai'].cpu_ms_per_request / medians[baseline].cpu_ms_per_request:.2f}x"
            )
        record = {
            "benchmark": "token_throughput",
            "load_generator": f"bombardier {BOMBARDIER.version}",
            "connections": connections,
            "duration_seconds": duration,
            "runs": runs,
            "trace_sample_ratio": settings.trace_sample_ratio,
            "otlp_bytes_exported": OtlpSink.spans_bytes,
            "ratio_rps_median": statistics.median(ratios["bare"]),
            "ratios_rps": ratios["bare"],
            "ratio_rps_median_audit": statistics.median(ratios["bare+audit"]),
            "ratios_rps_audit": ratios["bare+audit"],
            "median": {name: msgspec.to_builtins(side) for name, side in medians.items()},
            "runs_detail": {name: msgspec.to_builtins(s) for name, s in results.items()},
        }
        write_record(output, record)
        print(f"record: {output}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--sample-ratio", type=float, default=0.1, help="MEDIAI_TRACE_SAMPLE_RATIO")
    parser.add_argument("--output", type=Path, default=RESULTS / "token_throughput.json")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.duration, args.connections, args.sample_ratio, args.output))
