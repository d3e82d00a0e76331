"""What the role tests share: a consultation wired to the real bus (events reach the real NATS
through the agent's own Reporter), an agent session on the OpenAI-compatible stand-in, and
waiting for conditions."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from livekit import rtc
from livekit.agents import AgentSession
from livekit.plugins import openai

from services.agent.consultation import Consultation
from services.agent.medical import ClinicalAgent, build_agent
from services.agent.reporter import Reporter
from services.agent.roles import load_registry, render_instructions
from services.agent.spool import Journal, spool_root
from shared.bus import Bus
from shared.config import Settings
from shared.events import Event
from tests.standin import OpenAIStandin
from tests.support import live_dispatch

ROLES = load_registry()


def tag() -> str:
    return uuid.uuid4().hex[:8]


@dataclass
class Harness:
    """A consultation as a worker would build it, with what the session asked to end."""

    consultation: Consultation
    reporter: Reporter
    ended: list[tuple[str, str]] = field(default_factory=list)
    emitted: list[Event] = field(default_factory=list)


@asynccontextmanager
async def consultation(
    bus: Bus,
    settings: Settings,
    *,
    role: str,
    tenant: str,
    room: str | None = None,
    patient: str = "patient-1",
    rtc_room: rtc.Room | None = None,
    patient_ref: str = "",
    appointment_id: str = "",
    patient_is_minor: bool = False,
    api: httpx.AsyncClient | None = None,
) -> AsyncIterator[Harness]:
    """``patient`` is the identity of the person on the call; ``patient_ref``,
    ``appointment_id`` and ``patient_is_minor`` are what the dispatch said of the patient.
    With ``api`` (a client of ``tenant``) the consultation is a real, live dispatch's, which the
    scheduling service needs to answer its tools (it answers for a live dispatch's tenant)."""
    async with contextlib.AsyncExitStack() as stack:
        dispatch_id = (
            await stack.enter_async_context(live_dispatch(api)) if api else str(uuid.uuid4())
        )
        async with _consultation(
            bus,
            settings,
            role,
            tenant,
            dispatch_id,
            room,
            patient,
            rtc_room,
            patient_ref,
            appointment_id,
            patient_is_minor,
        ) as harness:
            yield harness


@asynccontextmanager
async def _consultation(
    bus: Bus,
    settings: Settings,
    role: str,
    tenant: str,
    dispatch_id: str,
    room: str | None,
    patient: str,
    rtc_room: rtc.Room | None,
    patient_ref: str,
    appointment_id: str,
    patient_is_minor: bool,
) -> AsyncIterator[Harness]:
    journal = Journal.create(
        spool_root(settings.data_dir), "role-tests", dispatch_id, settings.agent_spool_max_bytes
    )
    reporter = Reporter(bus, journal, tenant=tenant, key=dispatch_id)
    ended: list[tuple[str, str]] = []
    emitted: list[Event] = []

    def emit(event: Event) -> object:
        emitted.append(event)
        return reporter.emit(event)

    made = Consultation(
        tenant=tenant,
        room=room or f"consulta-{tag()}",
        dispatch_id=dispatch_id,
        role=ROLES[role],
        settings=settings,
        emit=emit,
        finish=lambda reason, detail: ended.append((reason, detail)),
        patient=lambda: patient,
        nc=bus.nc,
        rtc_room=rtc_room,
        patient_ref=patient_ref,
        appointment_id=appointment_id,
        patient_is_minor=patient_is_minor,
    )
    try:
        yield Harness(made, reporter, ended, emitted)
    finally:
        await reporter.close()


def agent_for(harness: Harness, instructions: str = "") -> ClinicalAgent:
    c = harness.consultation
    return build_agent(
        c, render_instructions(c.role, language="pt-BR", instructions=instructions, mode="append")
    )


@asynccontextmanager
async def session_on(
    standin: OpenAIStandin, harness: Harness, instructions: str = ""
) -> AsyncIterator[AgentSession[Any]]:
    """A started text session (no room) of the harness's role, on the stand-in's LLM; the
    transcript listener is attached as the worker attaches it."""
    async with (
        openai.LLM(base_url=standin.base_url, api_key="x", model="gpt-4o-mini") as model,
        AgentSession(llm=model, userdata=harness.consultation) as session,
    ):
        session.on("conversation_item_added", harness.consultation.transcript.on_item)
        opening = await session.start(agent_for(harness, instructions), capture_run=True)
        await opening  # what the agent says on entering (a consent role: the question)
        yield session


def said(session: AgentSession[Any]) -> list[tuple[str, str]]:
    """(role, text) of every message so far."""
    return [
        (item.role, item.text_content or "")
        for item in session.history.items
        if item.type == "message"
    ]
