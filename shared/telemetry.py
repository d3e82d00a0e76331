"""Tracing and logging, set up once per process; trace context carried over HTTP and NATS.

Spans go over OTLP/HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT`` (any backend, production) and in
Zipkin's JSON to ``OTEL_EXPORTER_ZIPKIN_ENDPOINT`` (the local stack's Zipkin). A dispatch is
always traced whole: ``POST /v1/agents`` is always sampled and everything after it follows its
parent; other requests are sampled at ``MEDIAI_TRACE_SAMPLE_RATIO``.

Span attributes use the names in ``shared.attributes``. Nothing personal is ever set as a span
attribute or written to a log: identities, names, transcripts and clinical data stay in events,
and every exporter drops what libraries set of them (``shared.span_privacy``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping, Sequence

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes

from shared.config import Settings
from shared.span_privacy import ScrubbingExporter

_configured = False

# Requests whose traces are always kept, whatever the ratio: a dispatch, end to end.
ALWAYS_SAMPLED = frozenset({("POST", "/v1/agents")})


class _DispatchesAlways(Sampler):
    """The sampler of a trace's first span: a dispatch request always, others by ratio."""

    def __init__(self, ratio: float) -> None:
        self.ratio = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        found = attributes or {}
        method = found.get("http.request.method") or found.get("http.method")
        # Our request spans (shared.http_telemetry) give the route template; library spans
        # give the path.
        path = str(
            found.get("http.route") or found.get("url.path") or found.get("http.target") or ""
        ).split("?")[0]
        if (method, path) in ALWAYS_SAMPLED:
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, trace_state)
        return self.ratio.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"DispatchesAlways{{{self.ratio.get_description()}}}"


def sampler(ratio: float) -> Sampler:
    """Dispatches always; other traces at ``ratio``; a span follows its parent's decision, except
    that a dispatch is traced even when its caller did not sample its own request."""
    return ParentBased(
        root=_DispatchesAlways(ratio), remote_parent_not_sampled=_DispatchesAlways(0.0)
    )


def exporters(settings: Settings) -> list[SpanExporter]:
    """The exporters the settings ask for, each behind the scrubber."""
    found: list[SpanExporter] = []
    if settings.otel_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otel_endpoint.rstrip("/") + "/v1/traces"
        found.append(OTLPSpanExporter(endpoint=endpoint))
    if settings.zipkin_endpoint:
        from opentelemetry.exporter.zipkin.json import ZipkinExporter

        found.append(ZipkinExporter(endpoint=settings.zipkin_endpoint))
    return [ScrubbingExporter(exporter) for exporter in found]


def setup_telemetry(service: str, settings: Settings) -> None:
    """Install the tracer provider (its exporters as configured, the sampler) and logging.

    Idempotent: a process serves one service, and tests may build several apps in one process.
    """
    global _configured  # the OpenTelemetry provider is process-global by design
    setup_logging(settings.log_level)
    if _configured:
        return
    provider = TracerProvider(
        resource=Resource.create({"service.name": f"mediai-{service}"}),
        sampler=sampler(settings.trace_sample_ratio),
    )
    for exporter in exporters(settings):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _configured = True


def flush(timeout_seconds: float) -> None:
    """Export the spans still waiting (a process about to end); bounded by ``timeout_seconds``."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush(int(timeout_seconds * 1000))


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
    """The current span's W3C ``traceparent`` (None outside any trace)."""
    return traceparent_of(trace.get_current_span().get_span_context())


def traceparent_of(span: trace.SpanContext) -> str | None:
    """``span``'s W3C ``traceparent`` (None for an invalid one), written directly rather than
    through the propagators: it is on every publish's path."""
    if not span.is_valid:
        return None
    return f"00-{span.trace_id:032x}-{span.span_id:016x}-{span.trace_flags:02x}"


def trace_headers(span: trace.SpanContext, headers: MutableMapping[str, str]) -> None:
    """Write ``span``'s W3C ``traceparent`` (and its ``tracestate``, if any) into ``headers``:
    what ``inject`` writes for it, without the propagators' lookups (every publish does this;
    the bus carries W3C trace context only, and no service sets baggage)."""
    traceparent = traceparent_of(span)
    if traceparent is None:
        return
    headers["traceparent"] = traceparent
    if span.trace_state:
        headers["tracestate"] = span.trace_state.to_header()


def parent_of(traceparent: str | None) -> context.Context | None:
    """The context a span about an event starts in: the current one when a span is current
    (publishing while handling a request), else the event's own ``traceparent`` (an outbox
    relay or a spool publishing later, outside the request that made the event)."""
    if trace.get_current_span().get_span_context().is_valid or not traceparent:
        return None
    return extract({"traceparent": traceparent})


def trace_id_of(traceparent: str | None) -> str:
    """The 32-hex-digit trace id of a W3C ``traceparent`` ("" when there is none)."""
    span = trace.get_current_span(extract({"traceparent": traceparent or ""}))
    context_ = span.get_span_context()
    return format(context_.trace_id, "032x") if context_.is_valid else ""
