"""The Litestar app factory every HTTP service uses.

It gives each service the same edges: ``/healthz`` (alive) and ``/readyz`` (NATS and Postgres
reachable, every background task running), OpenAPI at ``/schema``, API-key auth through the
``tenant`` dependency, errors as ``{"error": {"code", "message", "details"}}`` with a stable code
(an outage of a dependency is a 503 with ``Retry-After``, never a 500), tracing of every request,
and a lifespan that owns the NATS connection, the database pool, the service's other resources
and its background tasks (each supervised on its own, see ``shared.background``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
import msgspec
from litestar import Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ControllerRouterHandler
from opentelemetry import trace

from shared.background import BackgroundTask, TaskHealth, supervise
from shared.bus import Bus, BusUnavailableError, connect_bus
from shared.config import Settings
from shared.db import create_pool
from shared.failures import unavailable_dependency
from shared.outbox import run_outbox_relay
from shared.pruning import BUS_PRUNER
from shared.telemetry import setup_telemetry
from shared.tenants import Tenant, authenticate
from shared.viewtokens import (
    ViewForbiddenError,
    ViewTokenError,
    check_route,
    is_view_token,
    verify,
)

log = logging.getLogger(__name__)

# The dependencies every service's handlers can ask for, by these parameter names:
# ``tenant: CallerTenant``, ``bus: BusDep``, ``pool: PoolDep``, ``settings: SettingsDep``.
CallerTenant = NamedDependency[Tenant]
BusDep = NamedDependency[Bus]
PoolDep = NamedDependency[asyncpg.Pool]
SettingsDep = NamedDependency[Settings]


class ErrorDetail(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str
    details: list[dict[str, Any]] | None = None


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """The body of every error answer."""

    error: ErrorDetail


class ApiError(Exception):
    """A domain error with its HTTP status and stable machine-readable code.

    Services subclass it (``RoomNotFoundError(ApiError)``) or raise it directly.
    """

    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code


class UnauthorizedError(ApiError):
    status_code = 401
    code = "unauthorized"


class ForbiddenError(ApiError):
    status_code = 403
    code = "forbidden"


class NotFoundError(ApiError):
    status_code = 404
    code = "not_found"


class ServiceUnavailableError(ApiError):
    status_code = 503
    code = "unavailable"


# Seconds a client should wait before retrying after a 503 (a dependency restarting).
RETRY_AFTER_SECONDS = 5


def _error(status: int, code: str, message: str, details: Any = None) -> Response[ErrorBody]:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, details=details))
    headers = None
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    elif status == 503:
        headers = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return Response(body, status_code=status, headers=headers)


def _handle_exception(request: Request[Any, Any, Any], error: Exception) -> Response[ErrorBody]:
    """The one place that turns exceptions into HTTP answers. Tracebacks stay in our logs."""
    if isinstance(error, ApiError):
        return _error(error.status_code, error.code, error.message, error.details)
    if isinstance(error, BusUnavailableError):
        return _error(503, "bus_unavailable", "the event bus is unavailable; retry shortly")
    dependency = unavailable_dependency(error)
    if dependency is not None:
        log.warning(
            "%s %s: %s unavailable (%s)",
            request.method,
            request.scope.get("path_template", ""),
            dependency,
            type(error).__name__,
        )
        return _error(
            503,
            "dependency_unavailable",
            f"{dependency} is unavailable; retry shortly",
            [{"dependency": dependency}],
        )
    if isinstance(error, ValidationException):
        details = [
            _problem(request, str(item.get("key", "")), str(item.get("message", "")))
            for item in (error.extra if isinstance(error.extra, list) else [])
            if isinstance(item, dict)
        ]
        return _error(400, "invalid_request", "the request is not valid", details or None)
    if isinstance(error, NotFoundException):
        return _error(404, "not_found", "no such resource")
    if isinstance(error, HTTPException) and error.status_code < 500:
        code = {401: "unauthorized", 405: "method_not_allowed"}.get(
            error.status_code, "bad_request"
        )
        return _error(error.status_code, code, error.detail)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error(HTTP_500_INTERNAL_SERVER_ERROR, "internal_error", "internal error")


def _problem(request: Request[Any, Any, Any], key: str, message: str) -> dict[str, Any]:
    """One validation problem as the client knows the field: a query or header parameter by
    the name it sends (``patientRef``, not the handler's ``patient_ref``), and a pattern
    mismatch by the parameter's rule when it has one, rather than the regular expression."""
    try:
        parameter = request.route_handler.parsed_fn_signature.parameters.get(key)
    except AttributeError:
        parameter = None
    definition = getattr(parameter, "kwarg_definition", None)
    for alias in ("query", "header", "cookie"):
        key = getattr(definition, alias, None) or key
    rule = getattr(definition, "description", None)
    if rule and "regex" in message:
        message = f"must be {rule}"
    return {"field": key, "problem": message}


async def provide_tenant(request: Request[Any, Any, Any]) -> Tenant:
    """The caller's tenant, from ``Authorization: Bearer <API key>`` or, on the routes that
    take one (``shared.viewtokens.view_scope``), a view token; 401 otherwise, 403 for a view
    token that does not allow the route."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise UnauthorizedError("missing API key: send 'Authorization: Bearer <key>'")
    if is_view_token(key.strip()):
        return _view_tenant(request, key.strip())
    tenant = await authenticate(request.app.state.pool, key.strip())
    if tenant is None:
        raise UnauthorizedError("invalid or revoked API key")
    return tenant


def _view_tenant(request: Request[Any, Any, Any], token: str) -> Tenant:
    settings: Settings = request.app.state.settings
    try:
        grant = verify(token, settings.view_token_secret, now=time.time())
        check_route(grant, request.route_handler.opt, request.path_params)
    except ViewTokenError as error:
        raise UnauthorizedError(str(error)) from None
    except ViewForbiddenError as error:
        raise ForbiddenError(str(error)) from None
    return Tenant(id=grant.tenant, name=grant.tenant_name, grant=grant)


def _provide_bus(state: State) -> Bus:
    bus: Bus = state.bus
    return bus


def _provide_pool(state: State) -> asyncpg.Pool:
    pool: asyncpg.Pool = state.pool
    return pool


def _provide_settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


def _span_details(scope: Any) -> tuple[str, dict[str, str]]:
    """A request span starts named by its method only: paths carry room names and identities.
    ``_name_span_by_route`` renames it by route template once the request is routed."""
    return str(scope.get("method", "HTTP")), {}


async def _name_span_by_route(request: Request[Any, Any, Any]) -> None:
    # async: a synchronous hook would hop to a thread on every request.
    route = f"{request.method} {request.scope.get('path_template', '')}"
    span = trace.get_current_span()
    span.update_name(route)
    span.set_attribute("http.route", route)


# Request attributes that can identify a person (their address, their browser, identities in
# paths and query strings); their values never leave the process.
_PERSONAL_REQUEST_ATTRIBUTES = (
    "http.url",
    "http.target",
    "url.full",
    "url.path",
    "url.query",
    "http.user_agent",
    "user_agent.original",
    "net.peer.ip",
    "net.peer.port",
    "client.address",
    "client.port",
    "http.client_ip",
)


def _scrub_request_span(span: Any, scope: Any) -> None:
    for name in _PERSONAL_REQUEST_ATTRIBUTES:
        span.set_attribute(name, "[redacted]")


@get("/healthz", include_in_schema=False, sync_to_thread=False)
def healthz() -> dict[str, str]:
    return {"status": "alive"}


@get("/readyz", include_in_schema=False)
async def readyz(state: State) -> Response[dict[str, Any]]:
    """Ready when NATS and PostgreSQL answer and every background task runs; otherwise 503
    naming what is missing (a consumer waiting out an outage names the dependency)."""
    checks: dict[str, str] = {}
    bus: Bus = state.bus
    try:
        await asyncio.wait_for(bus.js.account_info(), timeout=1.0)
        checks["nats"] = "ok"
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        checks["nats"] = f"unreachable: {type(error).__name__}"
    try:
        await asyncio.wait_for(state.pool.fetchval("SELECT 1"), timeout=1.0)
        checks["postgres"] = "ok"
    except Exception as error:  # noqa: BLE001 - any failure means not ready
        checks["postgres"] = f"unreachable: {type(error).__name__}"
    tasks: dict[str, TaskHealth] = state.tasks
    ready = all(v == "ok" for v in checks.values()) and all(t.ready for t in tasks.values())
    waiting = sorted({t.detail for t in tasks.values() if t.waiting_for})
    body: dict[str, Any] = {
        "ready": ready,
        "checks": checks,
        "tasks": {name: health.view() for name, health in tasks.items()},
    }
    if waiting:
        body["waiting_for"] = waiting
    return Response(body, status_code=200 if ready else 503)


Background = BackgroundTask | Callable[[Litestar], Any]
Resource = Callable[[Litestar], AbstractAsyncContextManager[Any]]


async def _relay_outbox(app: Litestar) -> None:
    await run_outbox_relay(app.state.pool, app.state.bus)


def _as_task(background: Background) -> BackgroundTask:
    if isinstance(background, BackgroundTask):
        return background
    return BackgroundTask(getattr(background, "__name__", repr(background)), background)


class _Metrics(PrometheusController):
    """``/metrics`` (Prometheus): on the service's own port, never routed by the gateway."""

    include_in_schema = False


def create_service_app(
    *,
    service: str,
    settings: Settings,
    route_handlers: Sequence[ControllerRouterHandler],
    background: Sequence[Background] = (),
    resources: Sequence[Resource] = (),
    dependencies: dict[str, Provide] | None = None,
    description: str = "",
) -> Litestar:
    """A Litestar app for one MediAI service.

    ``resources`` are async context managers of the app (a LiveKit client) entered after the
    pool and the bus and before the background tasks, and left after them. ``background``
    tasks (``BackgroundTask``, or functions of the app named by their ``__name__``) run for the
    app's lifetime, each supervised on its own; their health is in ``/readyz``.
    """
    setup_telemetry(service, settings)
    platform = (BackgroundTask("outbox-relay", _relay_outbox), BUS_PRUNER)
    tasks = [_as_task(b) for b in (*platform, *background)]
    names = [task.name for task in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"{service}: background task names must be unique: {names}")

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.tasks = {task.name: TaskHealth(task.name) for task in tasks}
        async with contextlib.AsyncExitStack() as stack:
            app.state.pool = await create_pool(settings)
            stack.push_async_callback(app.state.pool.close)
            app.state.bus = await connect_bus(settings, service)
            stack.push_async_callback(app.state.bus.close)
            for resource in resources:
                await stack.enter_async_context(resource(app))
            running = [
                asyncio.create_task(supervise(t, app, app.state.tasks[t.name]), name=t.name)
                for t in tasks
            ]
            try:
                yield
            finally:
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)

    # Requests are counted by route template (group_path), never by path: paths carry room
    # names and identities, which must not become metric labels.
    prometheus = PrometheusConfig(
        app_name=service,
        prefix="mediai_http",
        group_path=True,
        exclude=["/healthz", "/readyz", "/metrics"],
    )
    return Litestar(
        route_handlers=[healthz, readyz, _Metrics, *route_handlers],
        middleware=[prometheus.middleware],
        lifespan=[lifespan],
        dependencies={
            "tenant": Provide(provide_tenant),
            "bus": Provide(_provide_bus, sync_to_thread=False),
            "pool": Provide(_provide_pool, sync_to_thread=False),
            "settings": Provide(_provide_settings, sync_to_thread=False),
            **(dependencies or {}),
        },
        exception_handlers={Exception: _handle_exception},
        before_request=_name_span_by_route,
        plugins=[
            OpenTelemetryPlugin(
                OpenTelemetryConfig(
                    exclude=["/healthz", "/readyz"],
                    scope_span_details_extractor=_span_details,
                    server_request_hook_handler=_scrub_request_span,
                )
            )
        ],
        openapi_config=OpenAPIConfig(
            title=f"MediAI {service}",
            version="1",
            description=description,
            path="/schema",
            components=Components(
                security_schemes={
                    "apiKey": SecurityScheme(
                        type="http", scheme="bearer", description="A tenant API key (mk_...)"
                    )
                }
            ),
            security=[{"apiKey": []}],
        ),
        debug=False,
    )
