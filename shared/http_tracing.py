"""Tracing of HTTP requests: one server span per sampled request, and no work for the others.

The span continues the caller's W3C ``traceparent`` when there is one; otherwise the tracer
provider's sampler (``shared.telemetry``: a ratio, parent-based) decides. An unsampled request
gets a non-recording span, only so that the events it publishes carry its (unsampled) trace
context and are not traced either. A span is named by the route template
(``POST /v1/tokens``) and carries the method, the route and the status code: never the path,
the query, the client's address or its user agent, which can identify a person.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import SpanKind, StatusCode

from shared import attributes as attr
from shared.telemetry import tracer

# Probes and scrapes are not requests anyone wants traced.
_UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})
_PROPAGATION_HEADERS = frozenset({b"traceparent", b"tracestate"})
_tracer = tracer(__name__)


class TracingMiddleware:
    """An ASGI middleware (Litestar runs it after routing, so the route template is known)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in _UNTRACED:
            await self.app(scope, receive, send)
            return
        route = f"{scope['method']} {scope.get('path_template', '')}"
        span = _tracer.start_span(route, context=_caller_context(scope), kind=SpanKind.SERVER)
        token = context.attach(trace.set_span_in_context(span))
        try:
            if not span.is_recording():
                await self.app(scope, receive, send)
                return
            await self._traced(span, route, scope, receive, send)
        finally:
            context.detach(token)

    async def _traced(
        self, span: trace.Span, route: str, scope: Any, receive: Any, send: Any
    ) -> None:
        status = 500

        async def send_with_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        span.set_attribute(attr.HTTP_METHOD, scope["method"])
        span.set_attribute(attr.HTTP_ROUTE, route)
        try:
            await self.app(scope, receive, send_with_status)
        except BaseException as error:
            # The type only: an exception's message may quote the request.
            span.set_attribute(attr.ERROR_TYPE, type(error).__name__)
            raise
        finally:
            span.set_attribute(attr.HTTP_STATUS_CODE, status)
            if status >= 500:
                span.set_status(StatusCode.ERROR)
            span.end()


def _caller_context(scope: Any) -> context.Context | None:
    """The trace context the caller sent, if any (None: a new trace, if sampled)."""
    carrier = {
        name.decode(): value.decode("latin-1")
        for name, value in scope["headers"]
        if name in _PROPAGATION_HEADERS
    }
    return propagate.extract(carrier) if carrier else None
