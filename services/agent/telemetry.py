"""Tracing in the agent's processes (the worker and each job process), without personal data.

livekit-agents traces a session in detail (each LLM call, each tool call, each turn) and puts
the conversation into span attributes (``lk.pii.*`` and the GenAI content attributes) unless
told not to. MediAI's spans never carry personal data (docs/privacy.md), so its filter is
installed ahead of every exporter: those attributes are dropped in the process, before anything
leaves it; the spans themselves (timings, models, token counts) still reach the collector.
"""

from __future__ import annotations

from livekit.agents import telemetry as lk_telemetry
from opentelemetry import trace

from shared.config import Settings
from shared.telemetry import setup_telemetry


def setup_agent_telemetry(settings: Settings, service: str = "agent") -> None:
    """``service`` is the name the spans carry (the tests run agent sessions in their own
    process, under their own name, filtered the same way)."""
    setup_telemetry(service, settings)
    lk_telemetry.set_tracer_provider(trace.get_tracer_provider(), allow_pii=False)
