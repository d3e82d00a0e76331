"""A stack for the HTTP benchmarks, as ``mediai up`` starts it, with tracing exported as in
production: over OTLP/HTTP, at a sample ratio, to a sink in the benchmark's process (rather than
to a local Zipkin, a JVM on the same CPUs)."""

from __future__ import annotations

import http.server
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from deploy.stack import Stack, StackState
from shared.config import Settings
from tests.support import stack_settings


class OtlpSink(http.server.BaseHTTPRequestHandler):
    """Accepts OTLP/HTTP exports and drops them: the services export as in production."""

    spans_bytes = 0

    def do_POST(self) -> None:
        OtlpSink.spans_bytes += len(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@asynccontextmanager
async def traced_stack(
    services: list[str], *, sample_ratio: float, keep_logs: bool = False, **overrides: object
) -> AsyncIterator[tuple[Settings, Stack, StackState]]:
    """``services`` with NATS, Postgres, LiveKit, the key service and the gateway, tracing at
    ``sample_ratio``, in a folder of its own removed at the end (with ``keep_logs``, its logs
    are copied out first: a 503's cause is in its service's log)."""
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), OtlpSink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    data_dir = Path(tempfile.mkdtemp(prefix="mediai-bench-"))
    settings = stack_settings(
        data_dir,
        otel_endpoint=f"http://127.0.0.1:{sink.server_port}",
        zipkin=False,
        trace_sample_ratio=sample_ratio,
        log_level="WARNING",
        **overrides,
    )
    stack = Stack(settings, services=services)
    try:
        state = await stack.start()
        yield settings, stack, state
    finally:
        await stack.stop()
        sink.shutdown()
        if keep_logs:
            kept = Path(tempfile.mkdtemp(prefix="mediai-bench-logs-"))
            shutil.copytree(data_dir / "logs", kept, dirs_exist_ok=True)
            print(f"the stack's logs are kept in {kept}")
        shutil.rmtree(data_dir, ignore_errors=True)
