"""The OpenAI stand-in as a running server: in a background thread for tests, or as a process.

with OpenAIStandin() as standin:
    standin.chat("appointment", tool_calls=[("book_appointment", {"day": "monday"})])
    standin.chat(after_tool="book_appointment", text="You are booked for Monday.")
    llm = openai.LLM(base_url=standin.base_url, api_key="test", model="gpt-4o-mini")
    ...
    assert standin.requests("chat")[0]["body"]["model"] == "gpt-4o-mini"

python -m tests.standin.openai_server --port 8790   # prints its base URL once listening
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

import uvicorn

from .openai_api import create_app
from .script import ChatRule, Script, ToolCall


def _bind(host: str, port: int) -> socket.socket:
    # binding here (port 0: the OS picks a free one) and handing the socket to uvicorn means the
    # port is known before the server starts, with no pick-then-bind race between tests
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _config(script: Script) -> uvicorn.Config:
    # keep-alive connections of the plugins' pooled clients must not hold up stop()
    return uvicorn.Config(
        create_app(script), log_level="warning", lifespan="off", timeout_graceful_shutdown=1
    )


def _as_tool_call(call: ToolCall | tuple[str, dict[str, Any] | str] | dict[str, Any]) -> ToolCall:
    if isinstance(call, ToolCall):
        return call
    return ToolCall(**call) if isinstance(call, dict) else ToolCall(*call)


class OpenAIStandin:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.script = Script()
        self._host, self._port = host, port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The server's root, where the /_standin admin endpoints are."""
        return f"http://{self._host}:{self._port}"

    @property
    def base_url(self) -> str:
        """What to give the openai SDK / livekit-plugins-openai as base_url."""
        return f"{self.url}/v1"

    def start(self) -> OpenAIStandin:
        sock = _bind(self._host, self._port)
        self._port = sock.getsockname()[1]
        self._server = server = uvicorn.Server(_config(self.script))
        # its own thread and event loop: works the same from sync and async tests, and a test
        # blocking its loop cannot stall the provider
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="openai-standin", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the OpenAI stand-in did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server and self._thread:
            self._server.should_exit = True
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> OpenAIStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting --------------------------------------------------------------------------

    def chat(
        self,
        match: str | None = None,
        *,
        text: str | None = None,
        tool_calls: Sequence[ToolCall | tuple[str, dict[str, Any] | str] | dict[str, Any]] = (),
        system: str | None = None,
        after_tool: str | None = None,
        usage: dict[str, int] | None = None,
        once: bool = False,
        delay: float = 0.0,
        error: dict[str, Any] | None = None,
    ) -> ChatRule:
        """Add a chat rule (see ChatRule for what each field means); rules match in order.

        tool_calls items: ToolCall(name, arguments), (name, arguments) or {"name", "arguments"};
        arguments a dict (sent as JSON) or a JSON string.
        """
        rule = ChatRule(
            match=match,
            text=text,
            tool_calls=[_as_tool_call(c) for c in tool_calls],
            system=system,
            after_tool=after_tool,
            usage=usage,
            once=once,
            delay=delay,
            error=error,
        )
        self.script.add_chat(rule)
        return rule

    def chat_default(self, text: str) -> None:
        """The answer when no rule matches."""
        self.script.set_chat_default(text)

    def transcripts(self, *texts: str) -> None:
        """Queue transcripts; each transcription request takes the next one."""
        self.script.add_transcripts(*texts)

    def transcript_default(self, text: str) -> None:
        """The transcript once the queue is empty."""
        self.script.set_transcript_default(text)

    def apply(self, doc: dict[str, Any]) -> None:
        """Apply a JSON script document, as POST /_standin/script does."""
        self.script.apply(doc)

    def requests(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Recorded requests, oldest first; kind: "chat", "transcription" or "speech"."""
        return self.script.requests(kind)

    def reset(self) -> None:
        """Forget all rules, transcripts and recorded requests."""
        self.script.reset()


def main() -> None:
    parser = argparse.ArgumentParser(description="Local stand-in for the OpenAI HTTP API")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args()
    sock = _bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    # a parent process waits for this line to know the port and that it is listening
    # (the socket is bound and listens as soon as uvicorn starts serving on it)
    sock.listen(128)
    print(f"OpenAI stand-in listening on http://{host}:{port}/v1", flush=True)
    uvicorn.Server(_config(Script())).run(sockets=[sock])


if __name__ == "__main__":
    main()
