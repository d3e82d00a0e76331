"""The whole API's OpenAPI document: every service's document, merged into the one the gateway
serves at ``/openapi.json`` (and ``docs/openapi.json``, which CI compares with the code).

Built from ``create_app(settings)`` of each service, without a running stack. Paths are
disjoint (the gateway routes by prefix); a component schema two services name alike is kept
once when both are the same, and otherwise each is renamed ``<Service><Name>``.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from litestar.serialization import encode_json

from deploy import gotools
from services import http_services
from shared.config import Settings
from shared.contract import finish

REPO = Path(__file__).resolve().parent.parent
DOCUMENT = REPO / "docs" / "openapi.json"

DESCRIPTION = """The MediAI API, through its gateway. Every request carries
`Authorization: Bearer <API key>` (LiveKit's webhooks carry LiveKit's signature instead).
Every error is `{"error": {"code", "message", "details"}}`: each response below lists the codes
it can carry; clients branch on `code`, never on `message`. A `503` always comes with
`Retry-After`. Creating operations take an `Idempotency-Key` (docs/idempotency.md)."""


_REF = re.compile(r'"#/components/schemas/([^"]+)"')


def service_document(service: str, settings: Settings) -> dict[str, Any]:
    """One service's document, as it serves it at ``/schema/openapi.json``."""
    app = importlib.import_module(f"services.{service}.app").create_app(settings)
    # Through Litestar's encoder, as the service serves it (values such as defaults are structs).
    document: dict[str, Any] = json.loads(encode_json(app.openapi_schema.to_schema()))
    return finish(document, app)


def _renamed(document: dict[str, Any], renames: dict[str, str]) -> dict[str, Any]:
    text = _REF.sub(
        lambda m: f'"#/components/schemas/{renames.get(m[1], m[1])}"', json.dumps(document)
    )
    renamed: dict[str, Any] = json.loads(text)
    schemas = renamed.get("components", {}).get("schemas", {})
    renamed.setdefault("components", {})["schemas"] = {
        renames.get(name, name): schema for name, schema in schemas.items()
    }
    return renamed


def merge(documents: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``documents`` (service -> document) as one; raises ValueError on a path two serve."""
    owners: dict[str, dict[str, Any]] = {}  # schema name -> {service: schema}
    for service, document in documents.items():
        for name, schema in document.get("components", {}).get("schemas", {}).items():
            owners.setdefault(name, {})[service] = schema
    clashing = {
        name
        for name, by_service in owners.items()
        if len({json.dumps(s, sort_keys=True) for s in by_service.values()}) > 1
    }
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    security_schemes: dict[str, Any] = {}
    for service, document in sorted(documents.items()):
        prefix = service.title().replace("_", "")
        renames = {name: f"{prefix}{name}" for name in clashing if service in owners[name]}
        document = _renamed(document, renames)
        for path, item in document.get("paths", {}).items():
            if path in paths:
                raise ValueError(f"{path} is served by two services")
            paths[path] = item
        components = document.get("components", {})
        schemas.update(components.get("schemas", {}))
        security_schemes.update(components.get("securitySchemes", {}))
    first = next(iter(documents.values()))
    return {
        "openapi": first["openapi"],
        "info": {"title": "MediAI API", "version": "1", "description": DESCRIPTION},
        "servers": [{"url": "/", "description": "the gateway"}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": security_schemes,
        },
        "security": first.get("security", []),
    }


def api_document(settings: Settings | None = None) -> dict[str, Any]:
    """The merged document of every HTTP service, from the code (defaults for the settings, so
    the document does not depend on the machine's environment)."""
    from services.keys import kek

    with tempfile.TemporaryDirectory() as scratch:
        # The key service's app loads a key-encryption key; a throwaway one describes it as well.
        settings = settings or Settings(data_dir=Path(scratch))
        kek.ensure_keyring_file(kek.keyring_path(settings))
        documents = {service: service_document(service, settings) for service in http_services()}
    return merge(documents)


# The services behind the gateway's /v1 routes (deploy/Caddyfile): what a browser may call.
PUBLIC = ("billing", "dispatcher", "rooms", "scheduling", "sessions", "token", "webhooks")


def write_per_service(out: Path) -> list[Path]:
    """Each public service's own document (as in the merged one) in ``out/<service>.json``: the
    web console's TypeScript client is generated from them (web/scripts/gen-api.mjs)."""
    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(data_dir=Path(scratch))
        documents = {service: service_document(service, settings) for service in PUBLIC}
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for service, document in documents.items():
        path = out / f"{service}.json"
        path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


# --- breaking changes -------------------------------------------------------------------------

# Breaking changes made on purpose, one a line: oasdiff's line for it, then the reason.
DECLARED = REPO / "docs" / "openapi-declared.txt"


class ApiCheckError(Exception):
    """The document cannot be checked, or it changed in a way not allowed; the message says how."""


def oasdiff() -> Path:
    """The OpenAPI diff tool (deploy/gotools.py: built once from the Go module proxy)."""
    try:
        return gotools.build(gotools.OASDIFF, announce=False)
    except gotools.GoToolUnavailableError as error:
        raise ApiCheckError(str(error)) from None


def undeclared_breaking(base: str, revision: str, declared: Path = DECLARED) -> str:
    """oasdiff's report of the breaking changes from ``base`` to ``revision`` (files, or git
    ``rev:path``) that docs/openapi-declared.txt does not declare; "" when there are none."""
    result = subprocess.run(
        [
            str(oasdiff()),
            "breaking",
            base,
            revision,
            "--fail-on",
            "ERR",
            "--err-ignore",
            str(declared),
            "--format",
            "singleline",
            "--color",
            "never",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode not in (0, 1):
        raise ApiCheckError(f"oasdiff failed: {(result.stderr or result.stdout).strip()}")
    return result.stdout.strip() if result.returncode == 1 else ""


def undeclared_breaking_of(document: dict[str, Any]) -> str:
    """The undeclared breaking changes from docs/openapi.json to ``document``."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as made:
        made.write(render(document))
    try:
        return undeclared_breaking(str(DOCUMENT), made.name)
    finally:
        os.unlink(made.name)


def committed_versions() -> list[str]:
    """The commits that changed docs/openapi.json, as they landed on this branch (newest
    first); empty outside a git checkout."""
    listed = subprocess.run(
        ["git", "log", "--first-parent", "--format=%H", "--", str(DOCUMENT.relative_to(REPO))],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    return listed.stdout.split() if listed.returncode == 0 else []


def check(document: dict[str, Any]) -> list[str]:
    """What is wrong with the API's document; empty when nothing is.

    The document made from the code must be docs/openapi.json (a change to it is regenerated
    with ``mediai docs openapi``), and every breaking change, from the committed document to
    the code's and between each two committed versions of it, must be declared."""
    problems = []
    if not DOCUMENT.is_file() or DOCUMENT.read_text() != render(document):
        if DOCUMENT.is_file() and (found := undeclared_breaking_of(document)):
            problems.append(f"breaking changes, not declared in {DECLARED.name}:\n{found}")
        problems.append("docs/openapi.json is out of date: run 'mediai docs openapi'")
    versions = committed_versions()
    path = DOCUMENT.relative_to(REPO)
    for newer, older in itertools.pairwise(versions):
        if found := undeclared_breaking(f"{older}:{path}", f"{newer}:{path}"):
            problems.append(
                f"commit {newer[:10]} made breaking changes to docs/openapi.json, not declared "
                f"in {DECLARED.name}:\n{found}"
            )
    return problems
