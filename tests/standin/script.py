"""What the OpenAI stand-in answers, and what it was asked: the per-test script and request log.

All state sits behind one lock: tests script it from their own thread (or over HTTP from another
process) while the server's event loop reads it in a background thread.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CHAT_TEXT = "I am the stand-in model."
DEFAULT_TRANSCRIPT = "Hello."


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)

    def arguments_json(self) -> str:
        args = self.arguments
        return args if isinstance(args, str) else json.dumps(args)


@dataclass
class ChatRule:
    """One scripted chat answer; the first rule that matches a request answers it.

    match:      case-insensitive substring of the last user message (None: any).
    system:     case-insensitive substring of the system/developer messages (None: any), to tell
                several agents sharing one stand-in apart.
    after_tool: None: the rule answers a fresh user turn only (the conversation ends with a user
                message). A tool name, or "*" for any: the rule answers only the follow-up request
                that carries that tool's result. Without this split, a rule answering "book ..."
                with a tool call would match its own follow-up forever.
    text / tool_calls: the answer (text first, then tool calls, like OpenAI does).
    usage:      {"prompt_tokens", "completion_tokens", "cached_tokens"}; estimated when absent.
    once:       the rule is consumed by its first match.
    delay:      seconds before the first chunk (to test slow models, interruptions).
    error:      {"status": 500, "message": "..."}: answer with an OpenAI error instead.
    """

    match: str | None = None
    text: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    system: str | None = None
    after_tool: str | None = None
    usage: dict[str, int] | None = None
    once: bool = False
    delay: float = 0.0
    error: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> ChatRule:
        doc = dict(doc)
        calls = [c if isinstance(c, ToolCall) else ToolCall(**c) for c in doc.pop("tool_calls", [])]
        return cls(tool_calls=calls, **doc)

    def matches(self, turn: Turn) -> bool:
        if self.after_tool is None:
            if turn.tool_name is not None:
                return False
        elif turn.tool_name is None or self.after_tool not in ("*", turn.tool_name):
            return False
        if self.system is not None and self.system.lower() not in turn.system.lower():
            return False
        return self.match is None or self.match.lower() in turn.user.lower()


@dataclass
class Turn:
    """The parts of a chat completions request the rules look at."""

    user: str  # the last user message's text
    system: str  # all system/developer messages' text
    tool_name: str | None  # set when the conversation ends with this tool's result

    @classmethod
    def from_messages(cls, messages: list[dict[str, Any]]) -> Turn:
        user = next((_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
        system = "\n".join(_text(m) for m in messages if m.get("role") in ("system", "developer"))
        tool_name = None
        if messages and messages[-1].get("role") == "tool":
            # a tool message names only its call id; the name is on the assistant's call
            call_id = messages[-1].get("tool_call_id")
            calls = [c for m in messages for c in m.get("tool_calls") or []]
            tool_name = next(
                (c["function"]["name"] for c in calls if c.get("id") == call_id), "unknown"
            )
        return cls(user=user, system=system, tool_name=tool_name)


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):  # content parts: text, image_url (camera frames), ...
        return " ".join(p.get("text", "") for p in content if p.get("type") == "text")
    return content or ""


class Script:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._rules: list[ChatRule] = []
            self._chat_default = DEFAULT_CHAT_TEXT
            self._transcripts: list[str] = []
            self._transcript_default = DEFAULT_TRANSCRIPT
            self._requests: list[dict[str, Any]] = []

    # -- scripting --------------------------------------------------------------------------

    def add_chat(self, rule: ChatRule) -> None:
        with self._lock:
            self._rules.append(rule)

    def set_chat_default(self, text: str) -> None:
        with self._lock:
            self._chat_default = text

    def add_transcripts(self, *texts: str) -> None:
        with self._lock:
            self._transcripts.extend(texts)

    def set_transcript_default(self, text: str) -> None:
        with self._lock:
            self._transcript_default = text

    def apply(self, doc: dict[str, Any]) -> None:
        """Apply the JSON script document that POST /_standin/script takes."""
        if doc.get("replace"):
            with self._lock:
                self._rules.clear()
                self._transcripts.clear()
        for rule in doc.get("chat", []):
            self.add_chat(ChatRule.from_json(rule))
        if "chat_default" in doc:
            self.set_chat_default(doc["chat_default"])
        self.add_transcripts(*doc.get("transcripts", []))
        if "transcript_default" in doc:
            self.set_transcript_default(doc["transcript_default"])

    # -- answering (called by the server) ---------------------------------------------------

    def chat_answer(self, messages: list[dict[str, Any]]) -> ChatRule:
        turn = Turn.from_messages(messages)
        with self._lock:
            for i, rule in enumerate(self._rules):
                if rule.matches(turn):
                    if rule.once:
                        del self._rules[i]
                    return rule
            return ChatRule(text=self._chat_default)

    def next_transcript(self) -> str:
        with self._lock:
            return self._transcripts.pop(0) if self._transcripts else self._transcript_default

    # -- request log ------------------------------------------------------------------------

    def record(self, kind: str, path: str, body: Any, **extra: Any) -> dict[str, Any]:
        entry = {"kind": kind, "path": path, "time": time.time(), "body": body, **extra}
        with self._lock:
            self._requests.append(entry)
        return entry

    def requests(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self._requests if kind is None or r["kind"] == kind]
