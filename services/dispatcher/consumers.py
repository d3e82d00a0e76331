"""The dispatcher's consumers: the read model, the launcher that turns requests into LiveKit
dispatches, the supervision of dead workers, and the sweeper of deadlines."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
import asyncpg
from livekit import api

from services.dispatcher import core, store
from services.dispatcher.pool import WorkerPool
from shared.bus import Bus, ConsumerSpec, Delivery
from shared.config import Settings
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
from shared.naming import livekit_room

log = logging.getLogger(__name__)

READ_MODEL = ConsumerSpec(
    durable="dispatcher-read-model",
    events=(
        AgentDispatchRequested,
        AgentDispatched,
        AgentDispatchFailed,
        AgentEndRequested,
        AgentSessionStarted,
        AgentSessionFailed,
        AgentSessionEnded,
    ),
)
LAUNCHER = ConsumerSpec(
    durable="dispatcher-launcher",
    events=(
        AgentDispatchRequested,
        AgentEndRequested,
        AgentDispatchFailed,
        AgentSessionFailed,
        AgentSessionStarted,
    ),
    # A dispatch has seconds to live: retry fast, and give up into a failure event.
    max_deliver=6,
    backoff=(0.2, 0.5, 1.0, 2.0, 3.0),
)
SUPERVISION = ConsumerSpec(durable="dispatcher-supervision", events=(AgentWorkerExited,))

# A joined agent asked to end gets this long to say goodbye before LiveKit is told to drop it.
END_GRACE = timedelta(seconds=20)
SWEEP_SECONDS = 0.5
_IDS = uuid.UUID("6f1d3c1e-4a52-4d8e-9a55-0d1a5c7e2b10")
LIVEKIT_ERRORS = (api.TwirpError, aiohttp.ClientError, TimeoutError, OSError)


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
    async with projection(pool, delivery, event.id) as conn:
        if conn is None:
            return await store.load(pool, event.subject)
        before = await store.load(conn, event.subject)
        after = core.evolve(before, event)
        if after is not None and after != before:
            await store.save(conn, after)
        return after


@dataclass
class Dispatcher:
    """What the consumers share: settings, bus, database, LiveKit and the worker pool."""

    settings: Settings
    bus: Bus
    pool: asyncpg.Pool
    livekit: api.LiveKitAPI
    workers: WorkerPool

    async def publish(
        self, data: Event, *, tenant: str, key: str, event_id: str | None = None
    ) -> None:
        await self.bus.publish(data, tenant=tenant, key=key, event_id=event_id)

    # -- read model ------------------------------------------------------------------------

    async def on_read_model(self, event: Envelope, delivery: Delivery) -> None:
        await apply(self.pool, event, delivery)

    # -- launcher --------------------------------------------------------------------------

    async def on_launcher(self, event: Envelope, delivery: Delivery) -> None:
        data = event.data
        if isinstance(data, AgentDispatchRequested):
            await self.launch(event, data, delivery)
        elif isinstance(data, AgentEndRequested | AgentDispatchFailed | AgentSessionFailed):
            state = await store.load(self.pool, data.dispatch_id)
            # Before it joined (or after it failed) nobody will end the job for us: take the
            # dispatch back from LiveKit so no worker picks it up late.
            if state is not None and state.state != "joined":
                await self.withdraw(event.tenant, state)
        elif isinstance(data, AgentSessionStarted):
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
        try:
            dispatch = None
            if delivery.deliveries > 1:
                # A retry may follow a create that worked. Listing is only done on retries: it
                # costs LiveKit seconds for a room that does not exist yet (livekit/livekit#4488).
                existing = await self.livekit.agent_dispatch.list_dispatch(room)
                dispatch = next((d for d in existing if d.metadata == metadata), None)
            if dispatch is None:
                dispatch = await self.livekit.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(
                        agent_name=self.settings.agent_name,
                        room=room,
                        metadata=metadata,
                    )
                )
        except LIVEKIT_ERRORS as error:
            if delivery.deliveries < LAUNCHER.max_deliver and utcnow() < request.deadline_at:
                raise  # retried with backoff
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
        data = event.data
        assert isinstance(data, AgentWorkerExited)
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

    async def sweep_forever(self) -> None:
        ended: set[str] = set()
        while True:
            try:
                await self.sweep(ended)
            except (asyncpg.PostgresError, OSError) as error:
                log.warning("sweeper paused: %s", type(error).__name__)
            await asyncio.sleep(SWEEP_SECONDS)

    async def sweep(self, ended: set[str]) -> None:
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
            if state.dispatch_id not in ended:
                ended.add(state.dispatch_id)
                await self.withdraw(state.tenant_id, state)
