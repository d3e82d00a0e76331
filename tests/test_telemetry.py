"""Traces leave nothing personal behind, and go to an OTLP collector when one is configured."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest
from litestar.testing import AsyncTestClient
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from deploy.stack import StackState
from services.token.app import create_app
from shared.bus import Bus
from shared.config import Settings
from shared.events import TokenIssued
from tests.support import watch

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PERSONAL = ("Maria da Silva", "paciente-cpf-12345678900", "203.0.113.9", "Mozilla/5.0 (Maria)")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[attr-defined]
    yield exporter
    exporter.shutdown()


async def test_request_spans_carry_no_personal_data(
    stack: StackState, settings: Settings, tenant_key: str, spans: InMemorySpanExporter
) -> None:
    async with AsyncTestClient(app=create_app(settings)) as client:
        response = await client.post(
            f"/v1/tokens?who={PERSONAL[1]}",
            json={"room": "consulta-9", "identity": PERSONAL[1], "name": PERSONAL[0]},
            headers={
                "Authorization": f"Bearer {tenant_key}",
                "X-Forwarded-For": PERSONAL[2],
                "User-Agent": PERSONAL[3],
                # Sampled by the caller: traced whatever the sampling ratio.
                "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01",
            },
        )
    assert response.status_code == 201
    finished = spans.get_finished_spans()
    assert any(s.name == "POST /v1/tokens" for s in finished), [s.name for s in finished]
    assert any(s.name.startswith("publish mediai.token.issued") for s in finished)
    request = next(s for s in finished if s.name == "POST /v1/tokens")
    assert request.context is not None and format(request.context.trace_id, "032x") == TRACE_ID
    assert dict(request.attributes or {}) == {
        "http.request.method": "POST",
        "http.route": "/v1/tokens",
        "http.response.status_code": 201,
    }
    for span in finished:
        text = f"{span.name} {dict(span.attributes or {})} {[e.attributes for e in span.events]}"
        for value in PERSONAL:
            assert value not in text, f"{value!r} leaked into span {span.name}"


async def test_an_unsampled_request_makes_no_spans_and_its_event_carries_its_context(
    stack: StackState,
    settings: Settings,
    tenant_key: str,
    spans: InMemorySpanExporter,
    bus: Bus,
) -> None:
    async with (
        AsyncTestClient(app=create_app(settings)) as client,
        watch(bus, TokenIssued) as issued,
    ):
        response = await client.post(
            "/v1/tokens",
            json={"room": "consulta-10", "identity": "p-10"},
            headers={
                "Authorization": f"Bearer {tenant_key}",
                "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-00",  # not sampled
            },
        )
        assert response.status_code == 201
        event = await issued.wait_for(lambda e: e.subject == "consulta-10")
    assert spans.get_finished_spans() == ()
    # The caller's trace goes on, unsampled, so whoever consumes the event does not trace it.
    assert event.traceparent is not None
    assert event.traceparent.split("-")[1] == TRACE_ID and event.traceparent.endswith("-00")


class _Collector(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_spans_are_exported_over_otlp_when_an_endpoint_is_set() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    program = (
        "from shared.config import load_settings\n"
        "from shared.telemetry import setup_telemetry, tracer\n"
        "from opentelemetry import trace\n"
        "setup_telemetry('probe', load_settings(env_file=None))\n"
        "with tracer('probe').start_as_current_span('otlp-probe-span'): pass\n"
        "trace.get_tracer_provider().force_flush()\n"
    )
    try:
        subprocess.run(
            [sys.executable, "-c", program],
            check=True,
            timeout=60,
            env={
                "PATH": "/usr/bin:/bin",
                "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{server.server_port}",
                "MEDIAI_TRACE_SAMPLE_RATIO": "1",  # a new trace, sampled for sure
            },
        )
    finally:
        server.shutdown()
    paths = [(path, kind) for path, kind, body in _Collector.received if b"otlp-probe-span" in body]
    assert paths == [("/v1/traces", "application/x-protobuf")]


def test_dispatches_are_always_sampled_and_the_rest_by_ratio() -> None:
    from opentelemetry.sdk.trace import TracerProvider

    from shared.telemetry import extract, sampler

    provider = TracerProvider(sampler=sampler(0.0))
    probe = provider.get_tracer("probe")

    def sampled(method: str, path: str) -> bool:
        attributes = {"http.request.method": method, "url.path": path}
        with probe.start_as_current_span(method, attributes=attributes) as span:
            with probe.start_as_current_span("child") as child:  # follows its parent
                assert child.is_recording() == span.is_recording()
            return span.is_recording()

    assert sampled("POST", "/v1/agents")
    assert not sampled("GET", "/v1/agents")
    assert not sampled("POST", "/v1/tokens")
    assert not sampled("POST", "/v1/agents/0195/commands")
    old_conventions = {"http.method": "POST", "http.target": "/v1/agents?x=1"}
    with probe.start_as_current_span("POST", attributes=old_conventions) as span:
        assert span.is_recording()
    # A caller's unsampled traceparent is followed, except by a dispatch.
    unsampled = extract({"traceparent": f"00-{'1' * 32}-{'2' * 16}-00"})
    dispatch = {"http.request.method": "POST", "url.path": "/v1/agents"}
    with probe.start_as_current_span("POST", context=unsampled, attributes=dispatch) as span:
        assert span.is_recording()
    with probe.start_as_current_span("GET", context=unsampled) as span:
        assert not span.is_recording()


def test_the_exporters_drop_what_libraries_record_of_a_conversation() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from shared.span_privacy import ScrubbingExporter

    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ScrubbingExporter(exported)))
    said = "Maria da Silva, dor no peito"
    with (  # noqa: PT012 - the span records the exception
        pytest.raises(ValueError, match="Maria"),
        provider.get_tracer("probe").start_as_current_span("user_turn") as span,
    ):
        span.set_attributes(
            {
                "lk.pii.user_transcript": said,
                "mediai.pii.name": said,
                "gen_ai.input.messages": said,
                "gen_ai.prompt.0.content": said,
                "gen_ai.tool.call.arguments": said,
                "lk.rpc.caller_identity": said,
                "lk.speech_id": "speech_1",
                "gen_ai.request.model": "gpt-4o-mini",
            }
        )
        span.add_event("gen_ai.user.message", {"content": said})
        span.add_event("lk.playout", {"lk.pii.input_text": said, "lk.interrupted": False})
        raise ValueError(said)
    (span,) = exported.get_finished_spans()
    assert said not in repr(span.to_json())
    assert dict(span.attributes or {}) == {
        "lk.speech_id": "speech_1",
        "gen_ai.request.model": "gpt-4o-mini",
    }
    assert [(e.name, dict(e.attributes or {})) for e in span.events] == [
        ("lk.playout", {"lk.interrupted": False}),
        ("exception", {"exception.type": "ValueError", "exception.escaped": "False"}),
    ]
    assert span.status.description == "ValueError"


def test_a_span_with_nothing_personal_is_exported_as_it_is_and_a_link_is_scrubbed_too() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from shared.span_privacy import ScrubbingExporter

    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(ScrubbingExporter(exported)))
    probe = provider.get_tracer("probe")
    with probe.start_as_current_span("publish", attributes={"mediai.tenant": "t1"}) as clean:
        pass
    room = clean.get_span_context()
    said = "Maria da Silva"
    with probe.start_as_current_span("POST /v1/webhooks/livekit") as span:
        span.add_link(room, {"mediai.room.sid": "RM_1", "lk.pii.identity": said})
    first, second = exported.get_finished_spans()
    assert dict(first.attributes or {}) == {"mediai.tenant": "t1"}
    assert [dict(link.attributes or {}) for link in second.links] == [{"mediai.room.sid": "RM_1"}]
    # Nothing to take out: the span itself goes on, not a copy.
    exported.clear()
    ScrubbingExporter(exported).export([first])
    assert exported.get_finished_spans()[0] is first
