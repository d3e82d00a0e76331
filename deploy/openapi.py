"""The services' OpenAPI documents, built from their apps without serving them: what the web
console's TypeScript client is generated from (``make client``, web/scripts/gen-api.mjs)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from litestar.serialization import encode_json

from shared.config import Settings

# The services behind the gateway's /v1 routes (deploy/Caddyfile): the public API. The keys
# service answers other services only, never a browser.
PUBLIC = ("billing", "dispatcher", "rooms", "scheduling", "sessions", "token", "webhooks")


def documents(settings: Settings) -> dict[str, dict[str, Any]]:
    """Each public service's OpenAPI document, as ``GET /schema/openapi.json`` would answer."""
    found = {}
    for service in PUBLIC:
        app = importlib.import_module(f"services.{service}.app").create_app(settings)
        # Litestar's own encoder, as it serves the document (examples may be msgspec Structs).
        found[service] = json.loads(encode_json(app.openapi_schema.to_schema()))
    return found


def write(out: Path, settings: Settings) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for service, document in documents(settings).items():
        path = out / f"{service}.json"
        path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
