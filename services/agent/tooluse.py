"""Each tool call of a session as an event (the timeline's "tool calls"): which tool, whether it
worked, how long it took; never its arguments or result, which may be personal."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.events.agents import AgentToolCalled


def tool_calls(executed: Any, *, dispatch_id: str, room: str, role: str) -> list[AgentToolCalled]:
    """The events of one ``function_tools_executed`` (livekit-agents: calls and their outputs,
    paired by position)."""
    return [
        AgentToolCalled(
            dispatch_id=dispatch_id,
            room=room,
            role=role,
            call_id=call.call_id,
            tool=call.name,
            ok=not output.is_error,
            duration_seconds=round(max(0.0, output.created_at - call.created_at), 3),
            called_at=datetime.fromtimestamp(call.created_at, UTC),
        )
        for call, output in executed.zipped()
    ]
