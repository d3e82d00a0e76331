"""Requests taken as strictly as the OpenAPI document states them, where Litestar is lenient
(bodies, date-time query parameters), and OPTIONS answers that name every method of a path."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, get_args

import msgspec
from litestar import Request, Response
from litestar.exceptions import ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute


async def check_request(request: Request[Any, Any, Any]) -> None:
    """Refuse (``ValidationException``: 400 ``invalid_request``) what the document does not
    allow and Litestar would convert: run before the handler's parameters are parsed."""
    times, body = _checks(request.route_handler)
    if times:
        _check_times(request, times)
    if body is not None:
        await _check_body(request, body)


# Where a handler keeps what there is to check of its requests (the handler's ``opt``): found
# once per handler rather than per request, on every request's path.
_CHECKS = "_strict_requests"


def _checks(handler: HTTPRouteHandler) -> tuple[tuple[str, ...], Any]:
    """The handler's date-time query parameters (by the name the client sends) and its body's
    type (None when it takes none)."""
    found: tuple[tuple[str, ...], Any] | None = handler.opt.get(_CHECKS)
    if found is None:
        dependencies = handler.resolve_dependencies()
        times = tuple(
            getattr(field.kwarg_definition, "query", None) or name
            for name, field in handler.parsed_fn_signature.parameters.items()
            if name not in dependencies
            and datetime in (field.annotation, *get_args(field.annotation))
        )
        data = handler.parsed_fn_signature.parameters.get("data")
        found = (times, None if data is None else data.annotation)
        handler.opt[_CHECKS] = found
    return found


def _check_times(request: Request[Any, Any, Any], keys: tuple[str, ...]) -> None:
    """A date-time query parameter is an RFC 3339 date-time, as the document says: Litestar also
    takes a number of seconds (``?until=0.5``)."""
    for key in keys:
        value = request.query_params.get(key)
        if value is None:
            continue
        try:
            msgspec.json.decode(msgspec.json.encode(value), type=datetime)
        except msgspec.ValidationError:
            problem = "must be an RFC 3339 date-time, e.g. 2026-03-02T09:00:00-03:00"
            raise ValidationException(extra=[{"key": key, "message": problem}]) from None


_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$\.?(?P<key>[^`]*)`)?$", re.DOTALL)


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral(item) for item in value]
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    return value


async def _check_body(request: Request[Any, Any, Any], annotation: Any) -> None:
    """Check a JSON body strictly, as its OpenAPI schema says: Litestar converts bodies
    leniently (``0`` for ``false``, ``"5"`` for an integer), which the document does not promise
    and the handlers do not expect. A number with no fraction (``5.0``) is an integer, as in JSON
    Schema. Malformed JSON is left to Litestar's 400."""
    if request.headers.get("content-type", "").split(";")[0] != "application/json":
        return
    body = await request.body()
    if not body:
        return
    try:
        msgspec.convert(_integral(msgspec.json.decode(body)), annotation, strict=True)
    except msgspec.ValidationError as error:
        found = _AT.match(str(error))
        key, message = (found["key"] or "", found["message"]) if found else ("", str(error))
        raise ValidationException(
            extra=[{"key": key, "message": message, "source": "body"}]
        ) from None
    except msgspec.DecodeError:
        return


def allow_every_method(route: HTTPRoute) -> None:
    """Litestar answers OPTIONS with the methods of the first handler registered for a path
    (the route rebuilt for the next one keeps the first one's OPTIONS handler), so ``Allow``
    left out ``DELETE /v1/rooms/{name}``; answer with every method of the route."""
    options = route.route_handler_map.get("OPTIONS")
    if options is None or options[0].handler_name != "options_handler":
        return
    allow = ", ".join(sorted(route.methods))

    def options_handler(scope: Any) -> Response[None]:
        return Response(None, status_code=204, headers={"Allow": allow}, media_type="text/plain")

    options[0]._fn = options_handler  # type: ignore[assignment]  # sync, as Litestar's own
