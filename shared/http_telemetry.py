"""Request telemetry: Prometheus metrics for every request, a span for sampled ones only.

One ASGI middleware does both, with one look at the response status: Litestar's Prometheus
middleware and OpenTelemetry plugin each cost more per request than the token service's own
work (issue 13). Litestar routes before middleware runs, so both name the request by its route
template (``POST /v1/tokens``), never by its path, which carries room names and identities.

Metrics (``shared.metrics``): requests by method, route, status and service, their duration,
and the requests in progress; the series of each label set are looked up once, then reused.

Tracing: the span continues the caller's W3C ``traceparent`` when there is one; otherwise the
tracer provider's sampler (``shared.telemetry``: dispatches always, others at a ratio) decides.
An unsampled request gets a non-recording span (the two attributes the sampler reads are all it
costs), only so that the events it publishes carry its (unsampled) trace context and are not
traced either. A span carries the method, the route template and the status: never the path,
the query, the client's address or its user agent, which can identify a person.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import Counter, Gauge, Histogram

from shared import attributes as attr
from shared import metrics
from shared.telemetry import tracer

# Probes and scrapes are not requests anyone wants counted or traced.
UNOBSERVED = frozenset({"/healthz", "/readyz", "/metrics"})
_PROPAGATION_HEADERS = frozenset({b"traceparent", b"tracestate"})
_tracer = tracer(__name__)

_Series = tuple["Counter", "Histogram"]


class RequestTelemetry:
    """The ASGI middleware; ``service`` is the ``app_name`` label of its metrics."""

    def __init__(self, app: Any, service: str) -> None:
        self.app = app
        self.service = service
        self._series: dict[tuple[str, str, int], _Series] = {}
        self._in_progress: dict[tuple[str, str], Gauge] = {}

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in UNOBSERVED:
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope.get("path_template", "")
        # The sampler sees the method and route (a dispatch is always traced).
        span = _tracer.start_span(
            f"{method} {path}",
            context=_caller_context(scope),
            kind=SpanKind.SERVER,
            attributes={attr.HTTP_METHOD: method, attr.HTTP_ROUTE: path},
        )
        token = context.attach(trace.set_span_in_context(span))
        status = 500

        async def send_observed(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        in_progress = self._gauge(method, path)
        in_progress.inc()
        began = time.perf_counter()
        try:
            await self.app(scope, receive, send_observed)
        except BaseException as error:
            if span.is_recording():
                # The type only: an exception's message may quote the request.
                span.set_attribute(attr.ERROR_TYPE, type(error).__name__)
            raise
        finally:
            elapsed = time.perf_counter() - began
            in_progress.dec()
            count, duration = self._counters(method, path, status)
            count.inc()
            duration.observe(elapsed)
            if span.is_recording():
                _describe(span, status)
            span.end()
            context.detach(token)

    def _counters(self, method: str, path: str, status: int) -> _Series:
        key = (method, path, status)
        series = self._series.get(key)
        if series is None:
            labels = (method, path, str(status), self.service)
            series = (
                metrics.HTTP_REQUESTS.labels(*labels),
                metrics.HTTP_DURATION.labels(*labels),
            )
            self._series[key] = series
        return series

    def _gauge(self, method: str, path: str) -> Gauge:
        gauge = self._in_progress.get((method, path))
        if gauge is None:
            gauge = metrics.HTTP_IN_PROGRESS.labels(method, path, self.service)
            self._in_progress[(method, path)] = gauge
        return gauge


def _describe(span: trace.Span, status: int) -> None:
    span.set_attribute(attr.HTTP_STATUS_CODE, status)
    if status >= 500:
        span.set_status(StatusCode.ERROR)


def _caller_context(scope: Any) -> context.Context | None:
    """The trace context the caller sent, if any (None: a new trace, if sampled)."""
    carrier = {
        name.decode(): value.decode("latin-1")
        for name, value in scope["headers"]
        if name in _PROPAGATION_HEADERS
    }
    return propagate.extract(carrier) if carrier else None
