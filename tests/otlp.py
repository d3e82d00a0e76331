"""A small OTLP/HTTP trace receiver for tests: the real protocol (protobuf
``ExportTraceServiceRequest`` POSTed to ``/v1/traces``), each request written to a file as one
JSON line (the file export of every span the stack made), in a thread of the test process."""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


class _Handler(http.server.BaseHTTPRequestHandler):
    sink: ClassVar[Path]
    lock: ClassVar[threading.Lock]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path != "/v1/traces":
            self.send_response(404)
            self.end_headers()
            return
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        line = json.dumps(MessageToDict(request), ensure_ascii=False)
        with self.lock, self.sink.open("a", encoding="utf-8") as sink:
            sink.write(line + "\n")
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: object) -> None:
        pass


class SpanReceiver:
    """``with SpanReceiver(path) as receiver:`` serves ``receiver.url`` until the block ends."""

    def __init__(self, sink: Path) -> None:
        handler = type("Handler", (_Handler,), {"sink": sink, "lock": threading.Lock()})
        self.sink = sink
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> SpanReceiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.server.shutdown()
        self.server.server_close()

    def exported(self) -> list[tuple[str, dict[str, Any]]]:
        """Everything received so far, one ``resourceSpans`` entry (a process's batch, with its
        resource and scopes) at a time, with its service's name."""
        found = []
        if not self.sink.exists():
            return found
        for line in self.sink.read_text(encoding="utf-8").splitlines():
            for resource in json.loads(line).get("resourceSpans", []):
                attributes = resource.get("resource", {}).get("attributes", [])
                service = next(
                    (
                        a["value"].get("stringValue", "")
                        for a in attributes
                        if a["key"] == "service.name"
                    ),
                    "",
                )
                found.append((service, resource))
        return found

    def spans(self) -> list[dict[str, Any]]:
        """Every span received so far, each with its service's name (``service``)."""
        return [
            {**span, "service": service}
            for service, resource in self.exported()
            for scope in resource.get("scopeSpans", [])
            for span in scope.get("spans", [])
        ]
