"""The patients' rights' consumers: where each patient's events are (the export's index), what
each holder erased (the certificates), and the access log's hash chain."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from litestar import Litestar

from services.scheduling.patients import store
from services.scheduling.patients.core import HolderReport
from shared.access import chained
from shared.background import BackgroundTask
from shared.consumer import Consumer, ConsumerSpec, Delivery, data_of
from shared.db import projection
from shared.events import Envelope, Event
from shared.events.agents import AgentCommandIssued, AgentDispatchRequested, AgentTranscribed
from shared.events.clinical import ConsentGiven, ConsentRefused, CopilotHintWritten, RedFlagRaised
from shared.events.patients import PatientDataErased, PersonalDataRead
from shared.events.reconciliation import ParticipantFound
from shared.events.rooms import ParticipantJoined, ParticipantUpdated, RoomCreated
from shared.phi import patient_of


@dataclass(frozen=True)
class Index:
    pool: asyncpg.Pool
    stream: str


async def index(where: Index, event: Envelope, delivery: Delivery) -> None:
    """Remember where an event about a patient is (nothing of its content)."""
    patient_ref = patient_of(event.data)
    if patient_ref:
        await store.index_event(
            where.pool,
            stream=where.stream,
            sequence=delivery.stream_sequence,
            tenant=event.tenant,
            patient_ref=patient_ref,
            event_type=event.type,
            at=event.time,
        )


def _index_of(durable: str, *types: type[Event]) -> ConsumerSpec[Index]:
    # Idempotent by the stream position (its key); nothing is opened.
    return ConsumerSpec(durable=durable, handlers=dict.fromkeys(types, index))


# The events the export shows (the appointments and anamneses come from scheduling's tables).
INDEX_EVENTS = _index_of(
    "scheduling-patient-index",
    AgentDispatchRequested,
    ConsentGiven,
    ConsentRefused,
    ParticipantJoined,
    ParticipantFound,
    ParticipantUpdated,
    RoomCreated,
)
INDEX_PHI = _index_of(
    "scheduling-patient-index-phi",
    AgentCommandIssued,
    AgentTranscribed,
    CopilotHintWritten,
    RedFlagRaised,
)


async def on_erased(pool: asyncpg.Pool, event: Envelope, delivery: Delivery) -> None:
    """A holder said what it erased: the erasure's certificate lists it."""
    erased = data_of(event, PatientDataErased)
    report = HolderReport(holder=erased.holder, erased=erased.erased, erased_at=erased.erased_at)
    async with pool.acquire() as conn:
        await store.save_report(conn, erased.erasure_id, report)


ERASURE_REPORTS: ConsumerSpec[asyncpg.Pool] = ConsumerSpec(
    durable="scheduling-erasure-reports", handlers={PatientDataErased: on_erased}
)


async def on_read(pool: asyncpg.Pool, event: Envelope, delivery: Delivery) -> None:
    """A read of personal data becomes the next entry of its tenant's chain, once."""
    read = data_of(event, PersonalDataRead)
    async with projection(pool, delivery, event.id) as conn:
        if conn is None:
            return
        head = await store.chain_head(conn, event.tenant)
        await store.append_entry(conn, event.tenant, chained(head, event.id, read))


ACCESS_LOG: ConsumerSpec[asyncpg.Pool] = ConsumerSpec(
    durable="scheduling-access-log", handlers={PersonalDataRead: on_read}
)


def _runner(spec: ConsumerSpec[asyncpg.Pool]) -> BackgroundTask:
    async def run(app: Litestar) -> None:
        await Consumer(app.state.bus, spec, app.state.pool).run()

    return BackgroundTask(spec.durable, run)


def _index_runner(spec: ConsumerSpec[Index]) -> BackgroundTask:
    async def run(app: Litestar) -> None:
        # ``spec.stream`` is the JetStream name (MEDIAI_EVENTS), as the export reads it back.
        await Consumer(app.state.bus, spec, Index(app.state.pool, spec.stream)).run()

    return BackgroundTask(spec.durable, run)


CONSUMERS = [
    _index_runner(INDEX_EVENTS),
    _index_runner(INDEX_PHI),
    _runner(ERASURE_REPORTS),
    _runner(ACCESS_LOG),
]
