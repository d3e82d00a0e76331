"""The tools roles may use, by name (a role lists the names it may call in ``role.toml``).

A tool gets the running session's ``SessionRuntime`` as ``context.userdata``: the dispatch's
metadata, the role, the event reporter and ``finish()``. Tool docstrings are prompts: the model
reads them to decide when to call the tool, so they are written for it, in its working language.
"""

from __future__ import annotations

from typing import Any

from livekit.agents import RunContext, function_tool
from livekit.agents.llm import FunctionTool, Tool, Toolset


@function_tool
async def end_conversation(context: RunContext[Any]) -> None:
    """Encerra a conversa. Use somente quando a pessoa disser que quer terminar ou quando o
    objetivo da conversa tiver sido concluído e você já tiver se despedido."""
    runtime = context.userdata
    # Not awaited here: the goodbye is spoken after this tool returns, then the job ends.
    runtime.finish_soon("completed")


TOOLS: dict[str, FunctionTool[Any, Any]] = {
    "end_conversation": end_conversation,
}


def tools_for(names: list[str]) -> list[Tool | Toolset]:
    """The tool objects of a role; KeyError names a tool that does not exist."""
    return [TOOLS[name] for name in names]
