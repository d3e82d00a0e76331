"""An OTLP/HTTP trace receiver for tests: the real protocol (protobuf ``ExportTraceServiceRequest``
posted to ``/v1/traces``), every request written to files a test reads back.

``<folder>/otlp-requests.bin`` keeps the raw bodies (length-prefixed), so a test can look for a
string anywhere in what was exported; ``<folder>/spans.jsonl`` has one decoded span a line.
"""

from __future__ import annotations

import http.server
import json
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as ProtoSpan


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: str
    attributes: dict[str, Any]
    links: list[tuple[str, str]]

    @classmethod
    def from_json(cls, line: str) -> Span:
        doc = json.loads(line)
        doc["links"] = [tuple(link) for link in doc["links"]]
        return cls(**doc)


def _value(value: AnyValue) -> Any:
    return MessageToDict(value).popitem()[1] if value.WhichOneof("value") else None


def _spans(body: bytes) -> list[dict[str, Any]]:
    request = ExportTraceServiceRequest.FromString(body)
    found = []
    for resource in request.resource_spans:
        attributes = {a.key: _value(a.value) for a in resource.resource.attributes}
        for scope in resource.scope_spans:
            for span in scope.spans:
                found.append(
                    {
                        "service": attributes.get("service.name", ""),
                        "name": span.name,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_id": span.parent_span_id.hex(),
                        "kind": ProtoSpan.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                        "attributes": {a.key: _value(a.value) for a in span.attributes},
                        "links": [(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                    }
                )
    return found


class OtlpReceiver:
    """Serves ``POST /v1/traces`` on a free loopback port, in a thread, until ``stop``."""

    def __init__(self, folder: Path) -> None:
        self.raw_file = folder / "otlp-requests.bin"
        self.spans_file = folder / "spans.jsonl"
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = self.path == "/v1/traces" and "protobuf" in self.headers["Content-Type"]
                if ok:
                    receiver._write(body)
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _write(self, body: bytes) -> None:
        lines = "".join(json.dumps(span) + "\n" for span in _spans(body))
        with self._lock:
            with self.raw_file.open("ab") as raw:
                raw.write(struct.pack(">I", len(body)) + body)
            with self.spans_file.open("a") as spans:
                spans.write(lines)

    def spans(self) -> list[Span]:
        with self._lock:
            if not self.spans_file.exists():
                return []
            return [Span.from_json(line) for line in self.spans_file.read_text().splitlines()]

    def raw(self) -> bytes:
        with self._lock:
            return self.raw_file.read_bytes() if self.raw_file.exists() else b""

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
