"""The dispatcher's consumers: the read model, the launcher that turns requests into LiveKit
dispatches, the supervision of dead workers, and the sweeper of deadlines."""

from __future__ import annotations

import logging
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
from livekit import api
from opentelemetry.trace import Span, SpanKind

from services.dispatcher import core, store
from services.dispatcher.pool import WorkerPool
from shared import attributes as attr
from shared import metrics
from shared.bus import Bus
from shared.config import Settings
from shared.consumer import ConsumerSpec, Delivery, data_of
from shared.crashpoints import crash_point
from shared.db import projection
from shared.events import CODEC, Envelope, Event
from shared.events.agents import (
    AgentDispatched,
    AgentDispatchFailed,
    AgentDispatchRequested,
    AgentEndRequested,
    AgentSessionEnded,
    AgentSessionFailed,
    AgentSessionStarted,
    AgentWorkerExited,
)
from shared.failures import DependencyUnavailableError
from shared.naming import livekit_room
from shared.telemetry import tracer

log = logging.getLogger(__name__)
_tracer = tracer(__name__)

# The states a dispatch outcome metric counts (requested and dispatched are on the way).
OUTCOMES = ("joined", "ended", "failed")
# A joined agent asked to end gets this long to say goodbye before LiveKit is told to drop it.
END_GRACE = timedelta(seconds=20)
_IDS = uuid.UUID("6f1d3c1e-4a52-4d8e-9a55-0d1a5c7e2b10")
LIVEKIT_ERRORS = (api.TwirpError, aiohttp.ClientError, TimeoutError, OSError)


def livekit_call(method: str, dispatch_id: str) -> AbstractContextManager[Span]:
    """The client span of one call to LiveKit's AgentDispatch API."""
    return _tracer.start_as_current_span(
        f"LiveKit {method}",
        kind=SpanKind.CLIENT,
        attributes={
            attr.RPC_SYSTEM: "twirp",
            attr.RPC_SERVICE: "livekit.AgentDispatchService",
            attr.RPC_METHOD: method,
            attr.DISPATCH_ID: dispatch_id,
        },
    )


def outcome_id(dispatch_id: str, outcome: str) -> str:
    """The event id of a dispatch's outcome decided by the dispatcher: the same decision made
    twice (a redelivery, two replicas) is one event, which JetStream deduplicates."""
    return str(uuid.uuid5(_IDS, f"{dispatch_id}:{outcome}"))


def utcnow() -> datetime:
    return datetime.now(UTC)


async def apply(
    pool: asyncpg.Pool, event: Envelope, delivery: Delivery
) -> core.DispatchState | None:
    """Apply one event to the read model, once (shared by the consumer and the HTTP edge)."""
    before = after = None
    async with projection(pool, delivery, event.id) as conn:
        if conn is None:
            return await store.load(pool, event.subject)
        before = await store.load(conn, event.subject)
        if core.needs_parking(before, event):
            await store.park(conn, event.subject, delivery.stream_sequence, CODEC.encode(event))
            return None
        after = core.evolve(before, event)
        if before is None:  # the request: fold what arrived before it, in stream order
            parked = await store.unpark(conn, event.subject)
            after = core.fold(after, (CODEC.decode(p) for p in parked))
        if after is not None and after != before:
            await store.save(conn, after)
    # Counted once committed (a transaction that failed is applied again, not counted twice).
    if (
        after is not None
        and after.state in OUTCOMES
        and (before is None or before.state != after.state)
    ):
        metrics.DISPATCH_OUTCOMES.labels(after.role, after.state, after.reason).inc()
    return after


@dataclass
class Dispatcher:
    """What the consumers share: settings, bus, database, LiveKit and the worker pool."""

    settings: Settings
    bus: Bus
    pool: asyncpg.Pool
    livekit: api.LiveKitAPI
    workers: WorkerPool
    # Dispatch ids this process asked LiveKit to create (a retry checks before creating again),
    # and ended dispatches it already withdrew.
    _attempted: set[str] = field(default_factory=set)
    _withdrawn: set[str] = field(default_factory=set)
    # Joined dispatches whose agent was not in its room, since when (the lost-agent sweeper).
    _absent_since: dict[str, datetime] = field(default_factory=dict)

    async def publish(
        self, data: Event, *, tenant: str, key: str, event_id: str | None = None
    ) -> None:
        await self.bus.publish(data, tenant=tenant, key=key, event_id=event_id)

    # Handlers of the consumers (their maps are at the bottom of the module).

    async def on_read_model(self, event: Envelope, delivery: Delivery) -> None:
        await apply(self.pool, event, delivery)

    async def on_requested(self, event: Envelope, delivery: Delivery) -> None:
        await self.launch(event, data_of(event, AgentDispatchRequested), delivery)

    async def on_ending(self, event: Envelope, delivery: Delivery) -> None:
        """An end was asked for, or the dispatch failed: before it joined (or after it failed)
        nobody will end the job for us, so take the dispatch back from LiveKit so no worker
        picks it up late."""
        state = await store.load(self.pool, event.subject)  # a dispatch's events are keyed by it
        if state is not None and state.state != "joined":
            await self.withdraw(event.tenant, state)

    async def on_session_started(self, event: Envelope, delivery: Delivery) -> None:
        data = data_of(event, AgentSessionStarted)
        state = await store.load(self.pool, data.dispatch_id)
        if state is not None and state.state in core.TERMINAL and state.joined_at is None:
            # Joined after its dispatch had failed (too late): tell it to leave.
            await self.publish(
                AgentEndRequested(
                    dispatch_id=data.dispatch_id,
                    room=data.room,
                    requested_by="dispatcher",
                    requested_at=utcnow(),
                ),
                tenant=event.tenant,
                key=data.dispatch_id,
                event_id=outcome_id(data.dispatch_id, "late-join"),
            )

    async def launch(
        self, event: Envelope, request: AgentDispatchRequested, delivery: Delivery
    ) -> None:
        state = await store.load(self.pool, request.dispatch_id)
        if state is not None and state.state not in core.OPEN:
            return  # cancelled or already failed
        remaining = (request.deadline_at - utcnow()).total_seconds()
        if remaining <= 0:
            return  # the sweeper fails it
        # Right after start-up no worker may be registered yet, and LiveKit drops a job that no
        # worker can take: wait (within the deadline) for the pool to have one.
        if not await self.workers.wait_ready(remaining):
            await self.fail(
                event.tenant,
                request.dispatch_id,
                request.room,
                request.role,
                "no_worker",
                "no agent worker was registered with LiveKit within "
                f"{self.settings.agent_dispatch_deadline}s",
            )
            return
        room = livekit_room(event.tenant, request.room)
        metadata = CODEC.encode(event).decode()
        # A redelivery, or a retry while LiveKit was away (the consumer holds the message and
        # calls again), may follow a create that worked.
        retry = delivery.deliveries > 1 or request.dispatch_id in self._attempted
        self._attempted.add(request.dispatch_id)
        try:
            dispatch = None
            if retry and await self._room_exists(room):
                # A retry may follow a create that worked, which made the room: a room LiveKit
                # does not have holds no dispatch of ours (it closed, or was never made). Only
                # retries list, and only an existing room: listing a room that does not exist
                # fails after seconds (livekit/livekit#4488).
                with livekit_call("ListDispatch", request.dispatch_id):
                    existing = await self.livekit.agent_dispatch.list_dispatch(room)
                dispatch = next((d for d in existing if d.metadata == metadata), None)
            if dispatch is None:
                # The job's trace continues from the metadata (the event's traceparent), which
                # must stay the same on a retry for the listing above to recognise it.
                with livekit_call("CreateDispatch", request.dispatch_id):
                    dispatch = await self.livekit.agent_dispatch.create_dispatch(
                        api.CreateAgentDispatchRequest(
                            agent_name=self.settings.agent_name,
                            room=room,
                            metadata=metadata,
                        )
                    )
        except LIVEKIT_ERRORS as error:
            if utcnow() < request.deadline_at:
                if isinstance(error, api.TwirpError) and error.status >= 500:
                    # LiveKit answered but could not do it now: an outage too, not a failure
                    # of this message (its bounded retries would dead-letter an accepted
                    # dispatch once LiveKit is back).
                    raise DependencyUnavailableError("livekit", error.code) from error
                raise  # an outage of LiveKit: the consumer holds the message and retries
            await self.fail(
                event.tenant,
                request.dispatch_id,
                request.room,
                request.role,
                "livekit_unavailable",
                f"LiveKit did not accept the dispatch: {type(error).__name__}",
            )
            return
        # A crash here leaves a LiveKit dispatch with no `dispatched` event: the redelivery
        # must find it (list_dispatch), not create a second agent.
        crash_point("dispatcher.after_create_dispatch")
        await self.publish(
            AgentDispatched(
                dispatch_id=request.dispatch_id,
                room=request.room,
                role=request.role,
                livekit_dispatch_id=dispatch.id,
                agent_name=self.settings.agent_name,
                dispatched_at=utcnow(),
            ),
            tenant=event.tenant,
            key=request.dispatch_id,
            event_id=outcome_id(request.dispatch_id, "dispatched"),
        )

    async def _room_exists(self, room: str) -> bool:
        listing = await self.livekit.room.list_rooms(api.ListRoomsRequest(names=[room]))
        return bool(listing.rooms)

    async def withdraw(self, tenant: str, state: core.DispatchState) -> None:
        """Delete the LiveKit dispatch (which also ends a job it started); best effort."""
        if not state.livekit_dispatch_id:
            return
        try:
            await self.livekit.agent_dispatch.delete_dispatch(
                state.livekit_dispatch_id, livekit_room(tenant, state.room)
            )
        except LIVEKIT_ERRORS as error:
            log.warning(
                "could not delete LiveKit dispatch %s: %s",
                state.livekit_dispatch_id,
                type(error).__name__,
            )

    async def fail(
        self, tenant: str, dispatch_id: str, room: str, role: str, reason: str, detail: str
    ) -> None:
        await self.publish(
            AgentDispatchFailed(
                dispatch_id=dispatch_id,
                room=room,
                role=role,
                reason=reason,
                detail=detail,
                failed_at=utcnow(),
            ),
            tenant=tenant,
            key=dispatch_id,
            event_id=outcome_id(dispatch_id, reason),
        )

    # -- supervision -----------------------------------------------------------------------

    async def on_worker_exited(self, event: Envelope, delivery: Delivery) -> None:
        data = data_of(event, AgentWorkerExited)
        how = f"signal {data.signal}" if data.signal else f"exit code {data.exit_code}"
        for state in await store.joined_on_worker(self.pool, data.worker_id):
            await self.fail(
                state.tenant_id,
                state.dispatch_id,
                state.room,
                state.role,
                "worker_lost",
                f"the agent worker running the session died ({how}); "
                "dispatch again to get a new agent",
            )

    # -- deadlines -------------------------------------------------------------------------

    async def sweep_lost_agents(self) -> None:
        """Fail the joined dispatches whose agent has been out of its room for the grace period
        without ending its session: its job or worker died where the pool could not see it (an
        orchestrator's worker, a killed job process, a dispatcher restart). LiveKit is the
        truth about who is in a room; the pool's own worker exits are handled at once."""
        if not self.bus.nc.is_connected:
            # An agent that ended while NATS was away left its session_ended in its worker's
            # spool, published once NATS is back: count the grace from then, not from before.
            self._absent_since.clear()
            return
        now = utcnow()
        grace = timedelta(seconds=self.settings.agent_lost_grace)
        joined = await store.joined_since(self.pool, now - grace)
        for state in joined:
            if await self.agent_in_room(state):
                self._absent_since.pop(state.dispatch_id, None)
                continue
            first_missed = self._absent_since.setdefault(state.dispatch_id, now)
            if now - first_missed >= grace:
                await self.fail(
                    state.tenant_id,
                    state.dispatch_id,
                    state.room,
                    state.role,
                    "worker_lost",
                    "the agent left the room without ending its session (its worker stopped); "
                    "dispatch again to get a new agent",
                )
        still_joined = {state.dispatch_id for state in joined}
        for dispatch_id in set(self._absent_since) - still_joined:
            del self._absent_since[dispatch_id]

    async def agent_in_room(self, state: core.DispatchState) -> bool:
        try:
            await self.livekit.room.get_participant(
                api.RoomParticipantIdentity(
                    room=livekit_room(state.tenant_id, state.room), identity=state.agent_identity
                )
            )
        except api.TwirpError as error:
            if error.code == "not_found":
                return False
            raise DependencyUnavailableError("livekit", error.code) from None
        return True

    async def sweep(self) -> None:
        """Fail the dispatches past their deadline; withdraw those asked to end long ago."""
        now = utcnow()
        deadline = self.settings.agent_dispatch_deadline
        for state in await store.past_deadline(self.pool, now):
            detail = (
                f"no agent worker accepted the job within {deadline}s"
                if state.state == "dispatched"
                else f"the dispatch could not be handed to LiveKit within {deadline}s"
            )
            await self.fail(
                state.tenant_id, state.dispatch_id, state.room, state.role, "no_worker", detail
            )
        for state in await store.ending_too_long(self.pool, now - END_GRACE):
            if state.dispatch_id not in self._withdrawn:
                self._withdrawn.add(state.dispatch_id)
                await self.withdraw(state.tenant_id, state)


READ_MODEL: ConsumerSpec[Dispatcher] = ConsumerSpec(
    durable="dispatcher-read-model",
    handlers=dict.fromkeys(
        (
            AgentDispatchRequested,
            AgentDispatched,
            AgentDispatchFailed,
            AgentEndRequested,
            AgentSessionStarted,
            AgentSessionFailed,
            AgentSessionEnded,
        ),
        Dispatcher.on_read_model,
    ),
)
LAUNCHER: ConsumerSpec[Dispatcher] = ConsumerSpec(
    durable="dispatcher-launcher",
    handlers={
        AgentDispatchRequested: Dispatcher.on_requested,
        AgentEndRequested: Dispatcher.on_ending,
        AgentDispatchFailed: Dispatcher.on_ending,
        AgentSessionFailed: Dispatcher.on_ending,
        AgentSessionStarted: Dispatcher.on_session_started,
    },
    # A dispatch has seconds to live: retry fast, and give up into a failure event.
    max_deliver=6,
    backoff=(0.2, 0.5, 1.0, 2.0, 3.0),
)
SUPERVISION: ConsumerSpec[Dispatcher] = ConsumerSpec(
    durable="dispatcher-supervision", handlers={AgentWorkerExited: Dispatcher.on_worker_exited}
)
