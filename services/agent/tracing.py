"""An agent job's trace: one span per job, a child of its dispatch's request, with
livekit-agents' own spans (the join, each turn's STT, LLM, TTS and tools) and the job's event
publishing inside it.

The dispatch's trace context arrives in the job metadata (the ``AgentDispatchRequested`` event
and its ``traceparent``). livekit-agents roots each job in a ``job_entrypoint`` span of its own,
which cannot be given a parent; the job's span links to it and carries its job id.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

from livekit.agents import JobContext
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind

from shared import attributes as attr
from shared.config import Settings
from shared.telemetry import extract, flush, setup_telemetry, tracer

_tracer = tracer(__name__)
# How long a job's end waits for its spans to be exported (its process exits next).
FLUSH_SECONDS = 3.0


def install_tracing(settings: Settings, service: str = "agent") -> None:
    """In the worker and each job process (prewarm): the process's tracer provider, also given
    to livekit-agents with conversation content off (its PII stripping and the GenAI content
    switch), so no personal data leaves the process in a span. ``service`` is the name the spans
    carry (the tests run agent sessions in their own process, under their own name)."""
    from livekit.agents.telemetry import gen_ai, set_tracer_provider

    setup_telemetry(service, settings)
    gen_ai.set_capture_content(False)
    set_tracer_provider(trace.get_tracer_provider(), allow_pii=False)


class JobTrace:
    """The span of one job, current while the job runs; ``end`` it once, when the job is over."""

    def __init__(self, span: Span) -> None:
        self.span = span
        self._ended = False

    @classmethod
    def start(cls, ctx: JobContext, traceparent: str | None) -> JobTrace:
        """The job's span, a child of ``traceparent`` (its dispatch request) when there is one."""
        framework = trace.get_current_span().get_span_context()  # livekit's job_entrypoint
        span = _tracer.start_span(
            "agent job",
            context=extract({"traceparent": traceparent} if traceparent else {}),
            kind=SpanKind.CONSUMER,
            links=[Link(framework)] if framework.is_valid else None,
            attributes={
                attr.LIVEKIT_JOB_ID: ctx.job.id,
                attr.ROOM_SID: ctx.job.room.sid,
            },
        )
        return cls(span)

    @contextlib.contextmanager
    def current(self) -> Iterator[Span]:
        """Make the job's span the parent of what the job does from here (and of the tasks it
        starts: the session, its turns, the event reporter)."""
        with trace.use_span(self.span, end_on_exit=False) as span:
            yield span

    def describe(self, *, dispatch_id: str, role: str) -> None:
        self.span.set_attributes({attr.DISPATCH_ID: dispatch_id, attr.AGENT_ROLE: role})

    async def end(self, outcome: str) -> None:
        """End the span and export what the job traced, before its process goes."""
        if self._ended:
            return
        self._ended = True
        self.span.set_attribute(attr.AGENT_OUTCOME, outcome)
        self.span.end()
        await asyncio.to_thread(flush, FLUSH_SECONDS)
