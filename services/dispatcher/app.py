"""The dispatcher service: ``/v1/agents`` (dispatch, list, show, end, command agents) and, in the
background, its consumers and sweepers (the agent worker pools are services/pool)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from litestar import Litestar, Response, delete, get, post
from litestar.di import Provide
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import Parameter

from services.dispatcher import consumers, limits, store
from services.dispatcher.capacity import Capacity
from services.dispatcher.catalog import Catalog, build_catalog
from services.dispatcher.core import (
    TERMINAL,
    DispatchAgentRequest,
    DispatchRejectedError,
    DispatchState,
    decide_request,
    evolve,
)
from services.dispatcher.registry import WorkerRegistry
from shared import leases
from shared.background import BackgroundTask, every
from shared.bus import Bus
from shared.config import Settings
from shared.consumer import Consumer, ConsumerSpec, Delivery
from shared.contract import BUS_UNAVAILABLE, errors, links
from shared.crashpoints import crash_point
from shared.events import CODEC, Envelope, Event, envelope
from shared.events.agents import AgentCommandIssued, AgentEndRequested
from shared.http import ApiError, ForbiddenError, NotFoundError, create_service_app
from shared.idempotency import KEY_PRUNER, RequestIds, idempotent
from shared.livekit_api import livekit_resource
from shared.naming import ROOM_NAME, ROOM_NAME_RULE
from shared.telemetry import current_traceparent
from shared.tenants import Tenant
from shared.viewtokens import ViewForbiddenError, check_dispatch, view_scope


class DispatchView(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """A dispatch and its state: requested, dispatched, joined, ended or failed (with reason),
    and the patient it is about (``patientRef``, ``appointmentId``: "" when none)."""

    id: str
    room: str
    role: str
    state: str
    reason: str
    detail: str
    language: str
    stt: str
    llm: str
    tts: str
    realtime: str
    patient_ref: str
    appointment_id: str
    agent_identity: str
    requested_at: datetime
    deadline_at: datetime
    dispatched_at: datetime | None
    joined_at: datetime | None
    end_requested_at: datetime | None
    ended_at: datetime | None

    @classmethod
    def of(cls, state: DispatchState) -> DispatchView:
        fields = msgspec.structs.asdict(state)
        fields["id"] = fields.pop("dispatch_id")
        for private in ("tenant_id", "livekit_dispatch_id", "worker_id"):
            fields.pop(private)
        return cls(**fields)


class AgentCommandRequest(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True
):
    """``say`` speaks ``text`` now; ``update_instructions`` replaces the dispatch's
    instructions with ``text``; ``end`` is ``DELETE /v1/agents/{id}``."""

    command: Literal["say", "update_instructions", "end"]
    text: Annotated[str, msgspec.Meta(max_length=20_000)] = ""
    allow_interruptions: bool = True


class CommandAccepted(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    id: str
    command: str
    state: str


# How often deadlines are checked: a dispatch past its deadline fails within this.
SWEEP_SECONDS = 0.5


def utcnow() -> datetime:
    return datetime.now(UTC)


async def publish_and_apply(
    bus: Bus, pool: asyncpg.Pool, data: Event, *, tenant: str, key: str, event_id: str | None = None
) -> tuple[Envelope, DispatchState | None]:
    """Publish an event, then apply it to the read model at once (once: the read-model consumer
    skips it by id), so the caller reads its own write. Returns the event as the log holds it:
    when JetStream already had ``event_id`` (a retry of a publish that landed although its ack
    was lost), that is the first one, not this copy."""
    event: Envelope = envelope(
        data,
        source=bus.source,
        tenant=tenant,
        subject=key,
        event_id=event_id,
        traceparent=current_traceparent(),
    )
    ack = await bus.publish_envelope(event)
    # A crash here leaves the event on the log, unapplied: the read-model consumer applies it.
    crash_point("dispatcher.after_publish_before_apply")
    if ack.duplicate:
        logged = await bus.js.get_msg(ack.stream, ack.seq)
        event = CODEC.decode(logged.data or b"")
    delivery = Delivery.at_the_edge(consumers.READ_MODEL.durable, ack.seq)
    return event, await consumers.apply(pool, event, delivery)


def _rejected(error: DispatchRejectedError) -> ApiError:
    return ApiError(str(error), code=error.code, status_code=error.status, details=error.details)


@post(
    "/v1/agents",
    operation_id="dispatchAgent",
    summary="Dispatch an agent to a room",
    status_code=202,
    description="With an Idempotency-Key, the dispatch id and its event id derive from the key: "
    "a retry after a timeout or a 5xx names the same dispatch, and JetStream drops the event "
    "if the first attempt's publish did land, so a room never gets two agents from one request. "
    "When no agent worker has room for one more session (summed over every worker host, from "
    "the workers' own load reports) the dispatch is refused at once with a 503 and "
    "`Retry-After`, never accepted to fail at its deadline.",
    opt={
        **view_scope("agents:dispatch"),
        **links(
            202,
            getAgent={"dispatch_id": "$response.body#/id"},
            endAgent={"dispatch_id": "$response.body#/id"},
            commandAgent={"dispatch_id": "$response.body#/id"},
        ),
    },
    responses=errors(
        {
            400: {
                "unknown_role": "no such role (`details` list the valid ones)",
                "instructions_not_allowed": "the role takes no instructions, or does not let "
                "them replace its own",
                "unknown_model": "a model this deployment does not offer (`details` list them)",
                "unknown_avatar": "no such avatar (`details` list the valid ones)",
                "avatar_unavailable": "the avatar's provider is not configured here",
                "patient_ref_required": "`appointmentId` needs `patientRef`",
            },
            402: {
                "usage_limit_reached": "the clinic reached a monthly usage cap (`details` name "
                "each meter, its use, its cap and when the period ends)"
            },
            503: {
                **BUS_UNAVAILABLE,
                "agents_at_capacity": "every agent worker is running as many sessions as it "
                "takes (`details` give `workers`, `activeJobs`, `startingJobs`, `capacity` and "
                "`retryAfterSeconds`); retry after `Retry-After` seconds",
                "no_agent_worker": "no agent worker is registered with LiveKit; retry after "
                "`Retry-After` seconds",
            },
        }
    ),
)
async def dispatch_agent(
    data: DispatchAgentRequest,
    tenant: Tenant,
    bus: Bus,
    pool: asyncpg.Pool,
    settings: Settings,
    catalog: Catalog,
    capacity: Capacity,
    ids: RequestIds,
) -> DispatchView:
    try:
        check_dispatch(tenant.grant, room=data.room, role=data.role)
    except ViewForbiddenError as error:
        raise ForbiddenError(str(error)) from None
    now = utcnow()
    usage_limits = await store.usage_limits_in_force(pool, tenant.id, now)
    try:
        request = decide_request(
            data,
            catalog=catalog,
            dispatch_id=ids.id("dispatch"),
            now=now,
            deadline_seconds=settings.agent_dispatch_deadline,
            usage_limits=usage_limits,
        )
    except DispatchRejectedError as error:
        raise _rejected(error) from None
    try:
        async with capacity.reserve(pool):
            logged, _ = await publish_and_apply(
                bus,
                pool,
                request,
                tenant=tenant.id,
                key=request.dispatch_id,
                event_id=ids.id("dispatch-requested"),
            )
    except DispatchRejectedError as error:
        raise _rejected(error) from None
    # The answer is what was accepted: the consumers may already have moved the dispatch on.
    accepted = evolve(None, logged)
    assert accepted is not None
    return DispatchView.of(accepted)


@get(
    "/v1/agents",
    operation_id="listAgents",
    summary="List a room's (or all) agent dispatches",
    opt=view_scope("agents:read"),
)
async def list_agents(
    tenant: Tenant,
    pool: asyncpg.Pool,
    room: Annotated[
        str | None, Parameter(pattern=ROOM_NAME.pattern, description=ROOM_NAME_RULE)
    ] = None,
    # "state" is a name Litestar reserves for the app state: the query parameter is mapped.
    state_filter: Annotated[
        Literal["requested", "dispatched", "joined", "ended", "failed"] | None,
        Parameter(query="state"),
    ] = None,
    limit: Annotated[int, Parameter(ge=1, le=500)] = 100,
) -> list[DispatchView]:
    rows = await store.list_for_tenant(pool, tenant.id, room=room, state=state_filter, limit=limit)
    return [DispatchView.of(r) for r in rows]


_NOT_FOUND = {"dispatch_not_found": "no dispatch of that id in this tenant"}


async def _owned(pool: asyncpg.Pool, tenant: Tenant, dispatch_id: str) -> DispatchState:
    state = await store.for_tenant(pool, tenant.id, dispatch_id)
    if state is None:
        raise NotFoundError(f"no dispatch {dispatch_id!r}", code="dispatch_not_found")
    return state


@get(
    "/v1/agents/{dispatch_id:str}",
    operation_id="getAgent",
    summary="Show one dispatch",
    responses=errors({404: _NOT_FOUND}),
    opt=view_scope("agents:read"),
)
async def get_agent(dispatch_id: str, tenant: Tenant, pool: asyncpg.Pool) -> DispatchView:
    return DispatchView.of(await _owned(pool, tenant, dispatch_id))


@delete(
    "/v1/agents/{dispatch_id:str}",
    operation_id="endAgent",
    status_code=202,
    summary="End a dispatch: the agent says goodbye, reports its usage and leaves",
    description="202 while the agent is asked to end; 200 with the dispatch as it is when it "
    "had already ended or failed.",
    responses={
        200: ResponseSpec(DispatchView, description="The dispatch had already ended or failed"),
        **errors({404: _NOT_FOUND, 503: BUS_UNAVAILABLE}),
    },
)
async def end_agent(
    dispatch_id: str, tenant: Tenant, bus: Bus, pool: asyncpg.Pool
) -> Response[DispatchView]:
    state = await _owned(pool, tenant, dispatch_id)
    if state.state in TERMINAL:
        return Response(DispatchView.of(state), status_code=200)
    _, after = await publish_and_apply(
        bus,
        pool,
        AgentEndRequested(
            dispatch_id=dispatch_id, room=state.room, requested_by="api", requested_at=utcnow()
        ),
        tenant=tenant.id,
        key=dispatch_id,
    )
    return Response(DispatchView.of(after or state), status_code=202)


@post(
    "/v1/agents/{dispatch_id:str}/commands",
    operation_id="commandAgent",
    status_code=202,
    summary="Send a running agent a command (say, update_instructions, end)",
    responses=errors(
        {
            400: {"text_required": "`say` and `update_instructions` need a `text`"},
            404: _NOT_FOUND,
            409: {"dispatch_over": "the dispatch has ended or failed"},
            503: BUS_UNAVAILABLE,
        }
    ),
)
async def command_agent(
    dispatch_id: str, data: AgentCommandRequest, tenant: Tenant, bus: Bus, pool: asyncpg.Pool
) -> CommandAccepted:
    state = await _owned(pool, tenant, dispatch_id)
    if state.state in TERMINAL:
        raise ApiError(
            f"dispatch {dispatch_id!r} has {state.state}", code="dispatch_over", status_code=409
        )
    if data.command == "end":
        _, after = await publish_and_apply(
            bus,
            pool,
            AgentEndRequested(
                dispatch_id=dispatch_id, room=state.room, requested_by="api", requested_at=utcnow()
            ),
            tenant=tenant.id,
            key=dispatch_id,
        )
        return CommandAccepted(id=dispatch_id, command="end", state=(after or state).state)
    if not data.text.strip():
        raise ApiError(f"{data.command} needs a text", code="text_required")
    await bus.publish(
        AgentCommandIssued(
            dispatch_id=dispatch_id,
            room=state.room,
            command=data.command,
            text=data.text,
            allow_interruptions=data.allow_interruptions,
            issued_at=utcnow(),
            patient_ref=state.patient_ref,
        ),
        tenant=tenant.id,
        key=dispatch_id,
    )
    return CommandAccepted(id=dispatch_id, command=data.command, state=state.state)


def _consumer(spec: ConsumerSpec[consumers.Dispatcher]) -> BackgroundTask:
    async def run(app: Litestar) -> None:
        await Consumer(app.state.bus, spec, app.state.dispatcher).run()

    return BackgroundTask(spec.durable, run)


async def _sweep(app: Litestar) -> None:
    await app.state.dispatcher.sweep()


async def _sweep_lost(app: Litestar) -> None:
    await app.state.dispatcher.sweep_lost_agents()


def _worker_registry(workers: WorkerRegistry) -> BackgroundTask:
    async def run(app: Litestar) -> None:
        await workers.run(app.state.bus)

    return BackgroundTask("worker-registry", run)


def _dispatcher(workers: WorkerRegistry) -> Any:
    @contextlib.asynccontextmanager
    async def resource(app: Litestar) -> AsyncIterator[None]:
        app.state.dispatcher = consumers.Dispatcher(
            settings=app.state.settings,
            bus=app.state.bus,
            pool=app.state.pool,
            livekit=app.state.livekit,
            workers=workers,
        )
        yield

    return resource


def create_app(settings: Settings) -> Litestar:
    catalog = build_catalog(settings)
    workers = WorkerRegistry(enabled=settings.agent_pool_max > 0)
    capacity = Capacity()
    return create_service_app(
        service="dispatcher",
        settings=settings,
        route_handlers=[
            idempotent(dispatch_agent),
            list_agents,
            get_agent,
            end_agent,
            command_agent,
        ],
        resources=[livekit_resource, _dispatcher(workers)],
        background=[
            _worker_registry(workers),
            _consumer(consumers.READ_MODEL),
            _consumer(consumers.LAUNCHER),
            _consumer(consumers.SUPERVISION),
            every(
                "deadline-sweeper", SWEEP_SECONDS, leases.elected(leases.DISPATCH_DEADLINES, _sweep)
            ),
            every(
                "lost-agent-sweeper",
                max(1.0, settings.agent_lost_grace / 4),
                leases.elected(leases.LOST_AGENTS, _sweep_lost),
            ),
            BackgroundTask("usage-limits", limits.project_usage_limits),
            BackgroundTask("worker-capacity", lambda app: capacity.follow(app.state.bus)),
            KEY_PRUNER,
        ],
        dependencies={
            "catalog": Provide(lambda: catalog, sync_to_thread=False),
            "capacity": Provide(lambda: capacity, sync_to_thread=False),
        },
        description="Agents on demand: dispatch an agent of a role to a room, follow its state "
        "from the event log, command it, end it.",
    )
