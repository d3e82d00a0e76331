"""What the fault cases share: a private stack per module, signed LiveKit webhooks sent as
LiveKit sends them (retrying until a 2xx), counting what reached the stream, the read models
and the dead-letter stream, and the one line of figures each case prints."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx
import nats
from google.protobuf.json_format import MessageToJson
from livekit.protocol import models
from livekit.protocol.webhook import WebhookEvent
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy

from deploy.stack import Stack, StackState
from deploy.supervisor import Supervisor
from services.webhooks.signing import sign
from shared import subjects
from shared.bus import connect_bus, nats_options
from shared.config import Settings
from shared.events import CODEC, DEADLETTER_STREAM, Envelope, Event
from shared.events.agents import AgentWorkerLoadReported
from shared.naming import SYSTEM_TENANT
from shared.tenants import authenticate
from tests.support import stack_settings
from tests.test_stack import mediai as mediai_command

WEBHOOKS_PATH = "/v1/webhooks/livekit"
# Outage length (seconds) of the cases: in CI longer than the consumers' whole (shortened)
# retry schedule below; 60 for the figures in docs/reliability.md.
OUTAGE_SECONDS = float(os.environ.get("MEDIAI_FAULT_OUTAGE", "8"))
# The consumers' retry schedule in the fault stacks (MEDIAI_CONSUMER_BACKOFF), shortened so an
# outage of a few seconds outlasts it: a consumer that dead-letters on an outage shows in CI.
CONSUMER_BACKOFF = (0.2, 0.4, 0.8, 1.6)
# Longest a service may take to answer while a dependency is away (its own timeouts are less):
# shorter than the outage, so a request that hangs until the dependency is back is caught.
ANSWER_BUDGET_SECONDS = float(os.environ.get("MEDIAI_FAULT_ANSWER_BUDGET", "5"))

FIGURES: list[str] = []  # printed in the terminal summary (tests/faults/conftest.py)


@dataclass
class Figures:
    """The figures line of one case."""

    case: str
    sent: int = 0
    acknowledged: int = 0
    stored: int = 0
    applied: dict[str, int] = field(default_factory=dict)
    dead_lettered: int = 0
    recovery_seconds: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    def report(self) -> str:
        applied = " ".join(f"{name}={count}" for name, count in self.applied.items())
        extra = "".join(f" {name}={value}" for name, value in self.extra.items())
        line = (
            f"FAULT {self.case}: outage={OUTAGE_SECONDS:g}s "
            f"backoff={'+'.join(f'{d:g}' for d in CONSUMER_BACKOFF)}s sent={self.sent} "
            f"acknowledged={self.acknowledged} stored={self.stored} applied[{applied}] "
            f"dead_lettered={self.dead_lettered} recovery={self.recovery_seconds:.1f}s{extra}"
        )
        FIGURES.append(line)
        print(line)
        return line


@dataclass
class FaultStack:
    """A private stack of a fault module, with the handles a case needs."""

    settings: Settings
    stack: Stack
    state: StackState
    tenant: str
    api_key: str

    @property
    def supervisor(self) -> Supervisor:
        return self.stack.supervisor

    def client(self, *, authenticated: bool = True, timeout: float = 15.0) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.api_key}"} if authenticated else {}
        return httpx.AsyncClient(base_url=self.state.gateway_url, headers=headers, timeout=timeout)

    async def js(self) -> tuple[nats.NATS, JetStreamContext]:
        nc = await nats.connect(**nats_options(self.settings), max_reconnect_attempts=-1)
        return nc, nc.jetstream(timeout=5)


@asynccontextmanager
async def fault_stack(
    services: list[str],
    *,
    environment: dict[str, dict[str, str]] | None = None,
    **overrides: object,
) -> AsyncIterator[FaultStack]:
    """Start a stack of ``services`` on free ports under a temporary folder, as ``mediai up``
    would, with the shortened retry schedule; ``environment`` adds variables to some services
    (a crash point).

    Without agent workers (``agent_pool_max=0``, so the suite counts the dispatcher's own
    effects on a small machine) the stack's worker host still reports room for dispatches, as
    a real one does on the bus: the dispatcher refuses a dispatch when no worker has room, and
    here LiveKit holds the dispatches it is handed (no agent takes them)."""
    data_dir = Path(tempfile.mkdtemp(prefix="mediai-fault-"))
    settings = stack_settings(data_dir, **{"consumer_backoff": CONSUMER_BACKOFF, **overrides})
    stack = Stack(settings, services=services, environment=environment)
    state = await stack.start()
    try:
        pool = await asyncpg.connect(settings.database_url)
        try:
            tenant = await authenticate(pool, state.dev_api_key)  # type: ignore[arg-type]
        finally:
            await pool.close()
        assert tenant is not None
        if overrides.get("agent_pool_max") == 0 and "dispatcher" in services:
            await report_room_for_dispatches(settings)
        yield FaultStack(settings, stack, state, tenant.id, state.dev_api_key)
    finally:
        await stack.stop()
        if os.environ.get("MEDIAI_FAULT_KEEP"):  # the stack's folder and logs, to look into
            print(f"kept {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


async def new_clinic(faulty: FaultStack, name: str) -> tuple[str, str]:
    """A tenant of its own (no data key of it in any service's cache yet), made as an operator
    makes one: `mediai tenants create`, which publishes the platform's events itself (no service
    may publish them). Its id and API key."""
    result = await asyncio.to_thread(mediai_command, faulty.settings, "tenants", "create", name)
    assert result.returncode == 0, result.stderr
    first, key = result.stdout.strip().splitlines()[-2:]
    return first.split()[1], key.strip()


async def report_room_for_dispatches(settings: Settings, jobs: int = 1000) -> None:
    """One worker's load report, as the agent worker publishes it, good for hours: room for
    ``jobs`` dispatches (the dispatchers read the last report when they start again)."""
    bus = await connect_bus(settings, "agent", streams="skip")
    try:
        report = AgentWorkerLoadReported(
            worker_id=unique("AW_faults"),
            active_jobs=0,
            max_jobs=jobs,
            next_report_seconds=3600.0,
            reported_at=datetime.now(UTC),
        )
        await bus.publish(report, tenant=SYSTEM_TENANT, key=report.worker_id)
    finally:
        await bus.close()


# -- webhooks as LiveKit sends them -------------------------------------------------------------


def unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(5)}"


def participant_hook(
    event: str, tenant: str, room: str, participant_sid: str, *, at: int, joined_at: int
) -> WebhookEvent:
    """A participant_joined/left webhook of a standard participant (billed as participant time)."""
    return WebhookEvent(
        event=event,
        id=unique("EV"),
        created_at=at,
        room=models.Room(sid=f"RM_{room}", name=f"{tenant}~{room}"),
        participant=models.ParticipantInfo(
            sid=participant_sid, identity=participant_sid.lower(), joined_at=joined_at
        ),
    )


@dataclass
class Sent:
    """What a sender did: every webhook id sent, and those answered 2xx."""

    sent: list[str] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    acknowledged_at: list[float] = field(default_factory=list)  # time.monotonic() of each
    statuses: dict[int, int] = field(default_factory=dict)


async def deliver(
    client: httpx.AsyncClient,
    hook: WebhookEvent,
    settings: Settings,
    sent: Sent,
    *,
    give_up_after: float = 120.0,
) -> bool:
    """POST one signed webhook, again and again on a non-2xx or no answer (as LiveKit retries)
    until a 2xx or ``give_up_after`` seconds; True once acknowledged."""
    body = MessageToJson(hook).encode()
    sent.sent.append(hook.id)
    deadline = time.monotonic() + give_up_after
    delay = 0.1
    while time.monotonic() < deadline:
        # Signed per attempt: a signature expires, as LiveKit's own retries are re-signed.
        token = sign(body, settings.livekit_api_key, settings.livekit_api_secret)
        try:
            answer = await client.post(
                WEBHOOKS_PATH,
                content=body,
                headers={"Authorization": token, "Content-Type": "application/webhook+json"},
            )
            sent.statuses[answer.status_code] = sent.statuses.get(answer.status_code, 0) + 1
            if 200 <= answer.status_code < 300:
                sent.acknowledged.append(hook.id)
                sent.acknowledged_at.append(time.monotonic())
                return True
            assert answer.status_code in (502, 503), (answer.status_code, answer.text)
        except httpx.TransportError:
            sent.statuses[0] = sent.statuses.get(0, 0) + 1
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)
    return False


async def send_all(
    client: httpx.AsyncClient,
    hooks: list[WebhookEvent],
    settings: Settings,
    sent: Sent,
    *,
    concurrency: int = 16,
    rate: float | None = None,
) -> None:
    """Send ``hooks`` in order with ``concurrency`` in flight, at most ``rate`` per second."""
    queue: asyncio.Queue[WebhookEvent] = asyncio.Queue()
    for hook in hooks:
        queue.put_nowait(hook)
    began = time.monotonic()
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while not queue.empty():
            hook = queue.get_nowait()
            if rate is not None:
                issued += 1
                wait = began + issued / rate - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            await deliver(client, hook, settings, sent)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


# -- counting -----------------------------------------------------------------------------------


async def stored_events(
    js: JetStreamContext, event_type: type[Event], tenant: str
) -> list[Envelope]:
    """Every event of ``event_type`` for ``tenant`` on its stream, read back in full."""
    stream = subjects.stream_name(event_type.STREAM)
    info = await js.stream_info(stream, subjects_filter=subjects.type_filter(event_type, tenant))
    expected = sum((info.state.subjects or {}).values())
    events: list[Envelope] = []
    if expected == 0:
        return events
    done = asyncio.Event()

    async def on_message(msg: nats.aio.msg.Msg) -> None:
        events.append(CODEC.decode(msg.data))
        if len(events) >= expected:
            done.set()

    subscription = await js.subscribe(
        subjects.type_filter(event_type, tenant),
        cb=on_message,
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    try:
        await asyncio.wait_for(done.wait(), 60)
    finally:
        await subscription.unsubscribe()
    return events


async def dead_letters(js: JetStreamContext) -> int:
    """Messages on the dead-letter stream (the whole private stack's)."""
    info = await js.stream_info(subjects.stream_name(DEADLETTER_STREAM))
    return int(info.state.messages)


async def inbox_count(
    pool: asyncpg.Pool | asyncpg.Connection, consumer: str, ids: list[str]
) -> int:
    """How many of ``ids`` the consumer recorded as applied (its inbox: at most once each)."""
    count = await pool.fetchval(
        "SELECT count(*) FROM consumer_inbox WHERE consumer = $1 AND event_id = ANY($2::text[])",
        consumer,
        ids,
    )
    return int(count)


def now_seconds() -> int:
    return int(datetime.now(UTC).timestamp())
