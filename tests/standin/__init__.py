"""Stand-ins for the paid cloud AI providers, speaking their real wire protocols (see
ARCHITECTURE.md, "Tests")."""

from typing import Any

from .script import ChatRule, ToolCall

__all__ = ["ChatRule", "OpenAIStandin", "ToolCall"]


def __getattr__(name: str) -> Any:
    # imported lazily so `python -m tests.standin.openai_server` does not find the module
    # already imported by its package (runpy warns about that)
    if name == "OpenAIStandin":
        from .openai_server import OpenAIStandin

        return OpenAIStandin
    raise AttributeError(name)
