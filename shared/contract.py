"""The OpenAPI contract every service publishes: the error answers it really gives, with their
codes, in the body it really sends (``ErrorBody``), and request bodies as strict as they are.

A handler declares what only it knows with ``errors({404: {"room_not_found": "why"}})`` in its
``responses``; ``document_errors`` (called by the app factory) adds what the platform adds to
every operation: ``400 invalid_request`` where there is a parameter or a body to break, ``401``
from the API key, ``413`` from the gateway's body limit, ``503`` when a dependency or the service
is away. Each error response lists its codes in its description and carries one valid example.
``finish`` adds what ``ResponseSpec`` cannot say (the ``Retry-After`` and ``WWW-Authenticate``
headers, the links of ``links``, and which bodies are optional) to the JSON document a service
serves and the gateway's merged document is made of.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Annotated, Any

import msgspec
from litestar import Litestar
from litestar._openapi.schema_generation.plugins.struct import StructSchemaPlugin
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.openapi.spec import Example, OpenAPIType, Schema
from litestar.params import Parameter
from litestar.typing import FieldDefinition

from shared.naming import (
    IDENTITY,
    IDENTITY_RULE,
    PATIENT_REF,
    PATIENT_REF_RULE,
    ROOM_NAME,
    ROOM_NAME_RULE,
)

Codes = Mapping[str, str]


class ErrorDetail(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """The body of every error answer."""

    error: ErrorDetail


INVALID_REQUEST: Codes = {
    "invalid_request": "a parameter or the body breaks the documented schema, or the body is "
    "not JSON; `details` name each field (`field`) and what is wrong with it (`problem`)"
}
UNAUTHORIZED: Codes = {"unauthorized": "the API key is missing, unknown or revoked"}
TOO_LARGE: Codes = {
    "request_too_large": "the body is larger than the gateway takes (10 MB; 1 MB for webhooks)"
}
UNAVAILABLE: Codes = {
    "dependency_unavailable": "PostgreSQL, NATS, LiveKit or the key service cannot be reached "
    "now (`details` "
    "names it); nothing was done, retry after `Retry-After` seconds",
    "service_unavailable": "the gateway cannot reach the service behind this path; retry after "
    "`Retry-After` seconds",
}
BUS_UNAVAILABLE: Codes = {
    "bus_unavailable": "the event bus did not take the event; nothing was done, retry after "
    "`Retry-After` seconds"
}

# Path parameters: the pattern is stated in the OpenAPI document and checked by the service,
# which answers its own code (``invalid_room_name``...), not Litestar's ``invalid_request``.
RoomNamePath = Annotated[
    str,
    Parameter(description=ROOM_NAME_RULE, schema_extra={"pattern": ROOM_NAME.pattern}),
]
IdentityPath = Annotated[
    str,
    Parameter(description=IDENTITY_RULE, schema_extra={"pattern": IDENTITY.pattern}),
]
PatientRefPath = Annotated[
    str,
    Parameter(description=PATIENT_REF_RULE, schema_extra={"pattern": PATIENT_REF.pattern}),
]

# A page's cursor: the position (a PostgreSQL bigint) after which the next page starts. Bounded
# by the largest integer a JSON number holds exactly (JavaScript's MAX_SAFE_INTEGER: the console
# and generated clients read cursors as numbers), so a larger one is a 400 like any value out of
# range, never a query that overflows.
Cursor = Annotated[
    int,
    Parameter(ge=0, le=2**53 - 1, description="the `cursor` of the previous page; 0 for the first"),
]

# Parameters Litestar fills itself: they are not the client's input.
_RESERVED = {"request", "state", "scope", "headers", "cookies", "query", "socket", "body"}


@dataclasses.dataclass
class ErrorResponse(ResponseSpec):
    """An error answer of an operation: its codes, each with when it is given."""

    codes: dict[str, str] = dataclasses.field(default_factory=dict)


def _response(codes: Codes) -> ErrorResponse:
    lines = "\n".join(f"- `{code}`: {when}" for code, when in codes.items())
    first, when = next(iter(codes.items()))
    example = {"error": {"code": first, "message": when.split(";")[0], "details": None}}
    return ErrorResponse(
        data_container=ErrorBody,
        description=f"`error.code` is one of:\n{lines}",
        examples=[Example(summary=first, value=example)],
        generate_examples=False,
        codes=dict(codes),
    )


def errors(by_status: Mapping[int, Codes]) -> dict[int, ResponseSpec]:
    """An operation's own error answers, for its ``responses``: status -> {code: when}."""
    return {status: _response(codes) for status, codes in sorted(by_status.items())}


def merged(
    responses: Mapping[int, ResponseSpec] | None, more: Mapping[int, Codes]
) -> dict[int, ResponseSpec]:
    """``responses`` with ``more`` codes added (each status's codes united)."""
    result: dict[int, ResponseSpec] = dict(responses or {})
    for status, codes in more.items():
        before = result.get(status)
        known = dict(before.codes) if isinstance(before, ErrorResponse) else {}
        result[status] = _response({**known, **codes})
    return dict(sorted(result.items()))


def documented(**schema: Any) -> dict[str, Any]:
    """``msgspec.Meta(extra_json_schema=documented(pattern=...))``: a rule the OpenAPI document
    states while the service checks it itself (to answer with its own code, not
    ``invalid_request``). Litestar copies ``extra`` into the generated schema."""
    return {"extra": schema}


def _takes_input(handler: HTTPRouteHandler) -> bool:
    dependencies = set(handler.resolve_dependencies())
    names = set(handler.parsed_fn_signature.parameters) - dependencies - _RESERVED
    return bool(names) or any("{" in path for path in handler.paths)


def document_errors(handler: HTTPRouteHandler) -> None:
    """Add the platform's error answers to ``handler``'s (see the module)."""
    for status, response in (handler.responses or {}).items():
        if status >= 400 and not isinstance(response, ErrorResponse):
            raise TypeError(f"{handler}: declare its {status} with errors(), codes and all")
    common: dict[int, Codes] = {503: UNAVAILABLE}
    if _takes_input(handler):
        common[400] = INVALID_REQUEST
    if handler.resolve_security() != [{}]:  # [{}]: no API key (LiveKit's webhooks)
        common[401] = UNAUTHORIZED
    if {"POST", "PUT", "PATCH"} & set(handler.http_methods):  # the gateway limits any body
        common[413] = TOO_LARGE
    handler.responses = merged(handler.responses, common)


# Headers of error answers, by status (``shared.http`` sends them with every such answer).
_HEADERS: dict[str, dict[str, Any]] = {
    "401": {
        "WWW-Authenticate": {
            "description": "`Bearer`: how to authenticate",
            "schema": {"type": "string", "enum": ["Bearer"]},
        }
    },
    "503": {
        "Retry-After": {
            "description": "Seconds to wait before retrying",
            "required": True,
            "schema": {"type": "integer", "minimum": 0},
        }
    },
}


def links(statuses: int | tuple[int, ...], **targets: dict[str, str]) -> dict[str, Any]:
    """A handler's ``opt``: OpenAPI links from its answers of ``statuses`` to the operations
    named by operationId, each parameter (or ``requestBody``) a runtime expression of the answer,
    e.g. ``links(201, getRoom={"name": "$response.body#/name"})``. A client, or the fuzzer's
    stateful phase, follows them: create a room, then act on it."""
    chosen = statuses if isinstance(statuses, tuple) else (statuses,)
    return {"links": {str(status): targets for status in chosen}}


def links_of(app: Litestar) -> dict[str, dict[str, dict[str, dict[str, str]]]]:
    """operationId -> status -> the links its handler declares (``links``)."""
    found = {}
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if isinstance(handler, HTTPRouteHandler) and "links" in handler.opt:
                found[str(handler.operation_id)] = handler.opt["links"]
    return found


def _link(target: str, values: dict[str, str]) -> dict[str, Any]:
    link: dict[str, Any] = {"operationId": target}
    parameters = {name: value for name, value in values.items() if name != "requestBody"}
    if parameters:
        link["parameters"] = parameters
    if "requestBody" in values:
        link["requestBody"] = values["requestBody"]
    return link


def optional_bodies(app: Litestar) -> set[str]:
    """The operationIds whose body may be left out (the handler's ``data`` has a default):
    Litestar documents every request body as required."""
    found = set()
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            data = getattr(handler, "parsed_fn_signature", None)
            data = data.parameters.get("data") if data is not None else None
            if isinstance(handler, HTTPRouteHandler) and data is not None and data.has_default:
                found.add(str(handler.operation_id))
    return found


def finish(document: dict[str, Any], app: Litestar) -> dict[str, Any]:
    """The document of ``app`` as served: the headers of error answers, the links its handlers
    declare (``links``), and the bodies it may go without, added (see the module)."""
    declared = links_of(app)
    optional = optional_bodies(app)
    for item in document.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            name = operation.get("operationId", "")
            if name in optional and "requestBody" in operation:
                operation["requestBody"]["required"] = False
            own = declared.get(name, {})
            for status, response in operation.get("responses", {}).items():
                if status in _HEADERS:
                    response["headers"] = {**_HEADERS[status], **response.get("headers", {})}
                if status in own:
                    response["links"] = {
                        target[0].upper() + target[1:]: _link(target, values)
                        for target, values in own[status].items()
                    }
    return document


class ContractJson(JsonRenderPlugin):
    """``/schema/openapi.json``: the finished document, and no HTML page (Litestar's pages load
    their scripts from public CDNs; the gateway serves a local viewer of the merged document)."""

    def render(self, request: Any, openapi_schema: dict[str, Any]) -> bytes:
        return super().render(request, finish(openapi_schema, request.app))


class StrictStructs(StructSchemaPlugin):
    """Struct schemas as msgspec decodes them. Litestar's own plugin leaves out what this adds:
    ``forbid_unknown_fields`` as ``additionalProperties: false``, the constraints of list items
    and dict keys (``list[Identity]`` lost its pattern), and a bound of 0 on an optional number
    (Litestar drops falsy bounds there, so ``ge=0`` went missing)."""

    def to_openapi_schema(self, field_definition: FieldDefinition, schema_creator: Any) -> Schema:
        schema = super().to_openapi_schema(field_definition, schema_creator)
        config = getattr(field_definition.type_, "__struct_config__", None)
        if config is not None and config.forbid_unknown_fields:
            schema.additional_properties = False
        info = msgspec.inspect.type_info(field_definition.type_)
        for field in getattr(info, "fields", ()):
            target = (schema.properties or {}).get(field.encode_name)
            if isinstance(target, Schema):
                _constrain(field.type, target)
        return schema


_BOUNDS = {"ge": "minimum", "gt": "exclusive_minimum", "le": "maximum", "lt": "exclusive_maximum"}
_LENGTHS = {"min_length": "min_length", "max_length": "max_length", "pattern": "pattern"}


def _constrain(field_type: msgspec.inspect.Type, schema: Schema) -> None:
    """Add to ``schema`` the constraints of ``field_type`` it lacks (see ``StrictStructs``)."""
    if isinstance(field_type, msgspec.inspect.UnionType):
        for member in field_type.types:
            _constrain(member, schema)
        return
    if isinstance(field_type, msgspec.inspect.Metadata):
        field_type = field_type.type
    if isinstance(field_type, msgspec.inspect.IntType | msgspec.inspect.FloatType):
        for bound, key in _BOUNDS.items():
            if getattr(field_type, bound) is not None and getattr(schema, key) is None:
                setattr(schema, key, getattr(field_type, bound))
    elif isinstance(field_type, msgspec.inspect.StrType):
        for limit, key in _LENGTHS.items():
            if getattr(field_type, limit) is not None and getattr(schema, key) is None:
                setattr(schema, key, getattr(field_type, limit))
    elif isinstance(field_type, msgspec.inspect.ListType):
        for branch in [schema, *(s for s in schema.one_of or () if isinstance(s, Schema))]:
            if isinstance(branch.items, Schema):
                _constrain(field_type.item_type, branch.items)
    elif isinstance(field_type, msgspec.inspect.DictType):
        keys = Schema(type=OpenAPIType.STRING)
        _constrain(field_type.key_type, keys)
        if keys != Schema(type=OpenAPIType.STRING):
            for branch in [schema, *(s for s in schema.one_of or () if isinstance(s, Schema))]:
                if branch.type == OpenAPIType.OBJECT or branch.additional_properties is not None:
                    branch.property_names = keys
