"""The last guard before a span leaves the process: attributes that can hold personal data go.

Our own code never sets such attributes (``shared.attributes``), and request attributes are
redacted as the request starts (``shared.http``). Libraries do set them: livekit-agents records
the conversation (transcripts, prompts, tool arguments, identities) and the GenAI conventions
carry message content; exceptions carry messages that may quote what a patient said. Every
exporter of every process goes through ``ScrubbingExporter``, so none of it is ever exported,
whatever a library's own switches say.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import Link, Status, StatusCode

log = logging.getLogger(__name__)

# Attributes that carry personal data under names that do not say so. (A name with a ``pii``
# segment, livekit-agents' ``lk.pii.*`` or our ``mediai.pii.*``, always goes too.)
PERSONAL_ATTRIBUTES = frozenset(
    {
        # the GenAI semantic conventions' content attributes
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.prompt",
        "gen_ai.completion",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "gen_ai.tool.description",
        "gen_ai.tool.definitions",
        "gen_ai.retrieval.query.text",
        "gen_ai.retrieval.documents",
        "gen_ai.memory.query.text",
        "gen_ai.memory.records",
        "gen_ai.evaluation.explanation",
        # livekit-agents: who called whom over RPC (participant identities)
        "lk.rpc.caller_identity",
        "lk.rpc.destination_identity",
        # an exception's message and traceback may quote personal data; its type stays
        "exception.message",
        "exception.stacktrace",
    }
)
# Families of content attributes (``gen_ai.prompt.0.content``, prompt template variables).
PERSONAL_PREFIXES = ("gen_ai.prompt.", "gen_ai.completion.")
# Span events that are conversation content as a whole (the GenAI message events).
PERSONAL_EVENT_PREFIX = "gen_ai."


def is_personal(name: str) -> bool:
    return (
        name in PERSONAL_ATTRIBUTES
        or "pii" in name.split(".")
        or name.startswith(PERSONAL_PREFIXES)
    )


def scrub_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (attributes or {}).items() if not is_personal(k)}


def scrub(span: ReadableSpan) -> ReadableSpan:
    """The span without personal attributes, content events or exception messages."""
    if _clean(span):
        return span  # most spans (a request, a publish): nothing to take out, nothing to copy
    events: Sequence[Event] = [
        Event(e.name, scrub_attributes(e.attributes), e.timestamp)
        for e in span.events
        if not e.name.startswith(PERSONAL_EVENT_PREFIX)
    ]
    links = [Link(link.context, scrub_attributes(link.attributes)) for link in span.links]
    status = span.status
    if status.status_code is StatusCode.ERROR and status.description:
        # OpenTelemetry writes "<ExceptionType>: <message>"; the message may be personal.
        status = Status(StatusCode.ERROR, status.description.split(":", 1)[0])
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=scrub_attributes(span.attributes),
        events=events,
        links=links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _clean(span: ReadableSpan) -> bool:
    """Whether ``scrub`` would leave ``span`` as it is."""
    status = span.status
    return (
        not span.events
        and not (status.status_code is StatusCode.ERROR and status.description)
        and not any(is_personal(name) for name in span.attributes or ())
        and not any(is_personal(name) for link in span.links for name in link.attributes or ())
    )


class ScrubbingExporter(SpanExporter):
    """Exports through ``inner`` what ``scrub`` leaves of each span. A backend that cannot be
    reached (still starting, away) costs the spans of that moment and one log line, not a
    traceback per batch."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self._failing = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export([scrub(span) for span in spans])
        except OSError as error:  # requests' errors are OSErrors: the backend is unreachable
            if not self._failing:
                self._failing = True
                log.warning(
                    "traces: %s unreachable (%s); spans are dropped until it is back",
                    type(self.inner).__name__,
                    type(error).__name__,
                )
            return SpanExportResult.FAILURE
        if self._failing and result is SpanExportResult.SUCCESS:
            self._failing = False
            log.warning("traces: %s reachable again", type(self.inner).__name__)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)
