"""``POST /v1/tokens`` through the gateway: MediAI's token service against a bare Litestar app.

Starts a stack with the token service (NATS, Postgres, LiveKit, the key service, token, the
gateway) as ``mediai up`` does, with tracing exporting over OTLP (to a sink in this process, at
``--sample-ratio``, 0.1 by default) and the Prometheus metrics on; then the bare app
(``bench.bare_token``: the same JWT, nothing else) behind a second Caddy running the same
Caddyfile. Both are served by uvicorn with the same options. The load generator is bombardier
(built once from the Go module proxy at a pinned version): ``--connections`` clients for
``--duration`` seconds per run, MediAI and bare interleaved (the order alternating), after a
warm-up of each. For each side: requests/s, latency p50/p90/p99, errors, and the server
process's CPU time per request; then the ratios, and a JSON record (``--output``).

Run: uv run python -m bench.token_throughput [--runs 5] [--duration 10] [--connections 64].
Prints figures; never fails on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from deploy.gotools import GoTool, build
from deploy.stack import Stack, child_environ, gateway_part
from deploy.supervisor import Part, http_ready
from tests.support import free_port, stack_settings

BOMBARDIER = GoTool("bombardier", "github.com/codesenberg/bombardier", "v1.2.6", "bombardier")
BODY = json.dumps({"room": "consulta-bench", "identity": "paciente-bench", "name": "Paciente"})
RESULTS = Path(__file__).parent / "results"


class Side(msgspec.Struct, kw_only=True):
    """One load run against one side."""

    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    errors: int
    cpu_ms_per_request: float


def bombardier() -> Path:
    """The pinned bombardier, built once with ``go install`` into the cache."""
    return build(BOMBARDIER)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(url: str, key: str, pid: int, duration: float, connections: int) -> Side:
    before = cpu_seconds(pid)
    process = await asyncio.create_subprocess_exec(
        str(bombardier()),
        *("-c", str(connections), "-d", f"{duration}s", "-m", "POST", "-b", BODY),
        *("-H", f"Authorization: Bearer {key}", "-H", "Content-Type: application/json"),
        *("-l", "-p", "r", "-o", "json", "--timeout=10s", url),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await process.communicate()
    cpu = cpu_seconds(pid) - before
    result = json.loads(out)["result"]
    ok = result["req2xx"]
    latency = result["latency"]["percentiles"]
    return Side(
        rps=ok / result["timeTakenSeconds"],
        p50_ms=latency["50"] / 1000,
        p90_ms=latency["90"] / 1000,
        p99_ms=latency["99"] / 1000,
        requests=ok,
        errors=sum(result[k] for k in ("req1xx", "req3xx", "req4xx", "req5xx", "others")),
        cpu_ms_per_request=cpu * 1000 / max(ok, 1),
    )


class _OtlpSink(http.server.BaseHTTPRequestHandler):
    """Accepts OTLP/HTTP exports and drops them: the services export as in production."""

    spans_bytes = 0

    def do_POST(self) -> None:
        _OtlpSink.spans_bytes += len(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def write_record(output: Path, record: dict[str, object]) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2) + "\n")


def median_side(sides: list[Side]) -> Side:
    return Side(
        **{
            field: statistics.median(getattr(s, field) for s in sides)
            for field in Side.__struct_fields__
        }
    )


def row(name: str, side: Side) -> str:
    return (
        f"  {name:<8} {side.rps:8.0f} req/s  p50 {side.p50_ms:6.1f} ms  p90 {side.p90_ms:6.1f} ms"
        f"  p99 {side.p99_ms:6.1f} ms  CPU {side.cpu_ms_per_request:5.2f} ms/req"
        f"  errors {side.errors:.0f}"
    )


async def main(
    runs: int, duration: float, connections: int, sample_ratio: float, output: Path
) -> None:
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _OtlpSink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    data_dir = Path(tempfile.mkdtemp(prefix="mediai-bench-"))
    # Spans go over OTLP to the sink rather than to a local Zipkin (a JVM on the same CPUs).
    settings = stack_settings(
        data_dir,
        otel_endpoint=f"http://127.0.0.1:{sink.server_port}",
        zipkin=False,
        trace_sample_ratio=sample_ratio,
        log_level="WARNING",
    )
    bombardier()
    stack = Stack(settings, services=["token"])
    state = await stack.start()
    try:
        # The bare app, and a second gateway: the same Caddyfile, its token upstream the bare app.
        bare_settings = msgspec.structs.replace(
            settings, token_port=free_port(), gateway_port=free_port()
        )
        bare_url = f"http://{settings.host}:{bare_settings.token_port}"
        bare = Part(
            name="bare-token",
            argv=[
                sys.executable,
                "-m",
                "bench.bare_token",
                settings.host,
                str(bare_settings.token_port),
            ],
            url=bare_url,
            env=child_environ(settings),
            ready=lambda: http_ready(f"{bare_url}/healthz"),
        )
        await stack.supervisor.start_together([bare])
        await stack.supervisor.start_together(
            [replace(gateway_part(bare_settings), name="gateway-bare")]
        )
        pids = {p.name: p.process.pid for p in stack.supervisor.parts if p.process}
        sides = {
            "mediai": (f"{settings.gateway_url}/v1/tokens", pids["token"]),
            "bare": (f"{bare_settings.gateway_url}/v1/tokens", pids["bare-token"]),
        }
        key = state.dev_api_key
        for url, pid in sides.values():  # warm-up: connections, caches, code paths
            await load(url, key, pid, min(duration, 3), connections)
        results: dict[str, list[Side]] = {"mediai": [], "bare": []}
        for run in range(runs):
            order = ["mediai", "bare"] if run % 2 == 0 else ["bare", "mediai"]
            for name in order:
                url, pid = sides[name]
                results[name].append(await load(url, key, pid, duration, connections))
            print(f"run {run + 1}/{runs}:", flush=True)
            for name in ("mediai", "bare"):
                print(row(name, results[name][-1]), flush=True)
        ratios = [m.rps / b.rps for m, b in zip(results["mediai"], results["bare"], strict=True)]
        medians = {name: median_side(sides_) for name, sides_ in results.items()}
        print(
            f"\nPOST /v1/tokens through the gateway, {connections} connections, {duration:.0f} s x {runs} runs (medians):"
        )
        for name in ("mediai", "bare"):
            print(row(name, medians[name]))
        print(
            f"  ratio (MediAI / bare, req/s): median {statistics.median(ratios):.2f}"
            f" (runs: {', '.join(f'{r:.2f}' for r in ratios)}); CPU per request"
            f" {medians['mediai'].cpu_ms_per_request / medians['bare'].cpu_ms_per_request:.2f}x"
        )
        record = {
            "benchmark": "token_throughput",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "load_average": os.getloadavg(),
                "python": platform.python_version(),
            },
            "load_generator": f"bombardier {BOMBARDIER.version}",
            "connections": connections,
            "duration_seconds": duration,
            "runs": runs,
            "trace_sample_ratio": settings.trace_sample_ratio,
            "otlp_bytes_exported": _OtlpSink.spans_bytes,
            "ratio_rps_median": statistics.median(ratios),
            "ratios_rps": ratios,
            "median": {name: msgspec.to_builtins(side) for name, side in medians.items()},
            "runs_detail": {name: msgspec.to_builtins(s) for name, s in results.items()},
        }
        write_record(output, record)
        print(f"record: {output}")
    finally:
        await stack.stop()
        sink.shutdown()
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--sample-ratio", type=float, default=0.1, help="MEDIAI_TRACE_SAMPLE_RATIO")
    parser.add_argument("--output", type=Path, default=RESULTS / "token_throughput.json")
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.duration, args.connections, args.sample_ratio, args.output))
