"""The tools roles may use, by name (a role lists the names it may call in ``role.toml``).

A tool gets the running session's ``SessionRuntime`` as ``context.userdata``: the dispatch's
metadata, the role, the event reporter and ``finish()``. Tool docstrings are prompts: the model
reads them to decide when to call the tool, so they are written for it, in its working language.
"""

from __future__ import annotations

from typing import Any

from livekit.agents import RunContext, function_tool
from livekit.agents.llm import FunctionTool, RawFunctionTool, Tool, Toolset

# The medical roles' tools (issue 5); docs/agents-roles.md says which role uses which.
from services.agent import consent, intake, reception, vision


@function_tool
async def end_conversation(context: RunContext[Any]) -> None:
    """Encerra a conversa. Use somente quando a pessoa disser que quer terminar ou quando o
    objetivo da conversa tiver sido concluído e você já tiver se despedido."""
    runtime = context.userdata
    # Not awaited here: the goodbye is spoken after this tool returns, then the job ends.
    runtime.finish_soon("completed")


TOOLS: dict[str, FunctionTool[Any, Any] | RawFunctionTool[Any, Any]] = {
    "end_conversation": end_conversation,
    # patient-facing roles: consent first (services/agent/consent.py)
    "record_consent": consent.record_consent,
    # intake: the anamnesis and urgent red flags (services/agent/intake.py)
    "record_answer": intake.record_answer,
    "finish_intake": intake.finish_intake,
    "raise_red_flag": intake.raise_red_flag,
    # receptionist: doctors and appointments (services/agent/reception.py)
    "search_doctors": reception.search_doctors,
    "next_slots": reception.next_slots,
    "book_appointment": reception.book_appointment,
    "find_appointments": reception.find_appointments,
    "reschedule_appointment": reception.reschedule_appointment,
    "cancel_appointment": reception.cancel_appointment,
    # vision (services/agent/vision.py)
    "look_at_patient": vision.look_at_patient,
}


def tools_for(names: list[str]) -> list[Tool | Toolset]:
    """The tool objects of a role; KeyError names a tool that does not exist."""
    return [TOOLS[name] for name in names]
