"""The Litestar app factory every HTTP service uses.

It gives each service the same edges: ``/healthz`` (alive) and ``/readyz`` (NATS and Postgres
reachable, every background task running), OpenAPI at ``/schema``, API-key auth through the
``tenant`` dependency (keys cached in process, ``shared.tenants.ApiKeys``), errors as
``{"error": {"code", "message", "details"}}`` with a stable code (an outage of a dependency is a
503 with ``Retry-After``, never a 500), metrics and sampled tracing of requests (``shared.http_telemetry``),
and a lifespan that owns the NATS connection, the database pool, the service's other resources
and its background tasks (each supervised on its own, see ``shared.background``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
from litestar import Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import HTTPException, NotFoundException, ValidationException
from litestar.handlers import HTTPRouteHandler
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusController
from litestar.routes import HTTPRoute
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ControllerRouterHandler

from shared.background import BackgroundTask, TaskHealth, supervise
from shared.bus import Bus, BusUnavailableError, connect_bus
from shared.config import Settings
from shared.contract import (
    ContractJson,
    ErrorBody,
    ErrorDetail,
    StrictStructs,
    document_errors,
)
from shared.db import close_pool, create_pool
from shared.failures import unavailable_dependency
from shared.http_telemetry import RequestTelemetry
from shared.outbox import run_outbox_relay
from shared.pruning import BUS_PRUNER
from shared.strict_requests import allow_every_method, check_request
from shared.telemetry import setup_telemetry
from shared.tenants import ApiKeys, Tenant
from shared.viewtokens import (
    ViewForbiddenError,
    ViewTokenError,
    check_route,
    is_view_token,
    verify,
)

log = logging.getLogger(__name__)

__all__ = ["ErrorBody", "ErrorDetail"]  # defined with the contract; imported from here too

# The dependencies every service's handlers can ask for, by these parameter names:
# ``tenant: CallerTenant``, ``bus: BusDep``, ``pool: PoolDep``, ``settings: SettingsDep``.
CallerTenant = NamedDependency[Tenant]
BusDep = NamedDependency[Bus]
PoolDep = NamedDependency[asyncpg.Pool]
SettingsDep = NamedDependency[Settings]


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


def _error(
    status: int, code: str, message: str, details: Any = None, *, allow: str | None = None
) -> Response[ErrorBody]:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, details=details))
    headers = None
    if allow is not None:
        headers = {"Allow": allow}
    elif status == 401:
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
        code = {
            400: "invalid_request",
            401: "unauthorized",
            405: "method_not_allowed",
            413: "request_too_large",
        }.get(error.status_code, "bad_request")
        allow = (error.headers or {}).get("allow") if error.status_code == 405 else None
        return _error(error.status_code, code, error.detail, allow=allow)
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


async def provide_tenant(request: Request[Any, Any, Any], pool: PoolDep) -> Tenant:
    """The caller's tenant, from ``Authorization: Bearer <API key>`` or, on the routes that
    take one (``shared.viewtokens.view_scope``), a view token; 401 otherwise, 403 for a view
    token that does not allow the route."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise UnauthorizedError("missing API key: send 'Authorization: Bearer <key>'")
    if is_view_token(key.strip()):
        return _view_tenant(request, key.strip())
    api_keys: ApiKeys = request.app.state.api_keys
    tenant = await api_keys.tenant(key.strip())
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


# The platform's dependencies form a chain (settings, then bus, then pool, then tenant), each
# naming the one before it as a parameter it does not use: Litestar resolves dependencies that
# do not depend on each other in an anyio task group, a task each, on every request, and that
# was ~10 % of a read's server CPU (litestar-org/litestar#4563). A chain is resolved one after
# the other, with no task; the links are reads of the app's state.
def _provide_bus(state: State, settings: SettingsDep) -> Bus:
    bus: Bus = state.bus
    return bus


def _provide_pool(state: State, bus: BusDep) -> asyncpg.Pool:
    pool: asyncpg.Pool = state.pool
    return pool


def _provide_settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


PLATFORM_DEPENDENCIES = {
    "tenant": Provide(provide_tenant),
    "bus": Provide(_provide_bus, sync_to_thread=False),
    "pool": Provide(_provide_pool, sync_to_thread=False),
    "settings": Provide(_provide_settings, sync_to_thread=False),
}


@get("/healthz", include_in_schema=False, sync_to_thread=False)
def healthz() -> dict[str, str]:
    return {"status": "alive"}


@get("/readyz", include_in_schema=False)
async def readyz(state: State) -> Response[dict[str, Any]]:
    """Ready when NATS and PostgreSQL answer and every background task runs; otherwise 503
    naming what is missing (a consumer waiting out an outage names the dependency). A service
    whose API works without a dependency (``create_service_app(ready_without=…)``) shows its
    failed check and the tasks waiting for it, but stays ready through its outage."""
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
    without: tuple[str, ...] = state.ready_without
    ready = all(v == "ok" for name, v in checks.items() if name not in without) and all(
        t.ready or t.waiting_for in without for t in tasks.values()
    )
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
    ready_without: tuple[str, ...] = (),
) -> Litestar:
    """A Litestar app for one MediAI service.

    ``/readyz`` is 503 (an orchestrator takes the service out of rotation) while NATS or
    PostgreSQL is away or a background task waits for a dependency, except those named in
    ``ready_without``, which its API does without: the webhooks edge needs NATS alone, and
    keeps taking LiveKit's webhooks while PostgreSQL is away.

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
        app.state.ready_without = ready_without
        app.state.tasks = {task.name: TaskHealth(task.name) for task in tasks}
        async with contextlib.AsyncExitStack() as stack:
            app.state.pool = await create_pool(settings)
            stack.push_async_callback(close_pool, app.state.pool)
            app.state.bus = await connect_bus(settings, service)
            stack.push_async_callback(app.state.bus.close)
            app.state.api_keys = ApiKeys(
                app.state.pool, ttl=settings.api_key_cache_ttl, size=settings.api_key_cache_size
            )
            await app.state.api_keys.listen(app.state.bus.nc)
            for resource in resources:
                await stack.enter_async_context(resource(app))
            running = [
                asyncio.create_task(supervise(t, app, app.state.tasks[t.name]), name=t.name)
                for t in tasks
            ]
            # What the service made to start (its modules, the app, its connections) lives as
            # long as the process: out of the collector's way. Otherwise every full collection
            # walks all of it, 60-150 ms of CPU here, and those pauses were the webhooks' p99
            # (issue 13); frozen, a full collection walks only what requests left behind.
            gc.collect()
            gc.freeze()
            try:
                yield
            finally:
                for task in running:
                    task.cancel()
                await asyncio.gather(*running, return_exceptions=True)

    app = Litestar(
        route_handlers=[healthz, readyz, _Metrics, *route_handlers],
        # Metrics and sampled tracing of every routed request (by route template, never path).
        middleware=[DefineMiddleware(RequestTelemetry, service=service)],
        lifespan=[lifespan],
        dependencies={**PLATFORM_DEPENDENCIES, **(dependencies or {})},
        exception_handlers={Exception: _handle_exception},
        # Bodies and date-times as strictly as the document states them (async: no thread hop).
        before_request=check_request,
        plugins=[StrictStructs()],
        openapi_config=OpenAPIConfig(
            title=f"MediAI {service}",
            version="1",
            description=description,
            path="/schema",
            render_plugins=[ContractJson()],
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
    for route in app.routes:
        for handler in getattr(route, "route_handlers", ()):
            if isinstance(handler, HTTPRouteHandler) and handler.include_in_schema:
                document_errors(handler)
        if isinstance(route, HTTPRoute):
            allow_every_method(route)
    return app
