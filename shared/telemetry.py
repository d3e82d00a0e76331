"""Tracing and logging, set up once per process; trace context carried over HTTP and NATS.

Span attributes use the names in ``shared.attributes``. Nothing personal is ever set as a span
attribute or written to a log: identities, names, transcripts and clinical data stay in events.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from shared.config import Settings

_configured = False


def setup_telemetry(service: str, settings: Settings) -> None:
    """Install the tracer provider (OTLP export when an endpoint is configured) and logging.

    Traces are sampled: a trace the caller sampled (its ``traceparent``) is followed, a new one
    is started for ``trace_sample_ratio`` of the requests and events, and whatever is not
    sampled costs no spans (non-recording ones, carrying the context).

    Idempotent: a process serves one service, and tests may build several apps in one process.
    """
    global _configured  # the OpenTelemetry provider is process-global by design
    setup_logging(settings.log_level)
    if _configured:
        return
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"mediai-{service}"}),
        sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)),
    )
    if settings.otel_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otel_endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    _configured = True


class _TraceIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        span_context = trace.get_current_span().get_span_context()
        record.trace_id = format(span_context.trace_id, "032x") if span_context.is_valid else "-"
        return True


def setup_logging(level: str) -> None:
    """One line per record, with the trace id so a log line leads to its trace."""
    root = logging.getLogger()
    root.setLevel(level)
    if not any(getattr(h, "_mediai", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [trace=%(trace_id)s] %(message)s")
        )
        handler.addFilter(_TraceIdFilter())
        handler._mediai = True  # type: ignore[attr-defined]
        root.addHandler(handler)


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject(headers: MutableMapping[str, str]) -> None:
    """Write the current trace context (W3C ``traceparent``/``tracestate``) into headers."""
    propagate.inject(headers)


def extract(headers: Mapping[str, str] | None) -> context.Context:
    """The trace context carried by incoming headers (an empty context when there is none)."""
    return propagate.extract(dict(headers or {}))


def current_traceparent() -> str | None:
    """The current span's W3C ``traceparent`` (None outside any trace), written directly
    rather than through the propagators: it is on every publish's path."""
    span = trace.get_current_span().get_span_context()
    if not span.is_valid:
        return None
    return f"00-{span.trace_id:032x}-{span.span_id:016x}-{span.trace_flags:02x}"
