"""The medical behaviour wired into a session: the agent (consent first, vision), and what starts
and stops with it (an avatar, the copilot's listening and hints, an anamnesis left unfinished).

``SessionRuntime`` (session.py) calls ``Medical`` at five points: to build the agent, before
the session starts (avatar), for its room options (who the session itself hears, video), once
started (copilot, vision streaming), and when it shuts down (records, usage). Tests build the
same agent with ``build_agent`` from a ``Consultation`` and drive it with ``session.run``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from livekit.agents import Agent, AgentSession, llm

from services.agent import consent, vision
from services.agent.avatar import Avatar
from services.agent.consent import ConsentGate
from services.agent.consultation import Consultation, speak, utcnow
from services.agent.copilot import Copilot, HintOutput, HintSender
from services.agent.intake import Intake
from services.agent.listening import RoomListener
from services.agent.presence import is_human, matches
from services.agent.tools import TOOLS
from shared.events.agents import AgentTranscribed
from shared.participants import DOCTOR, person_role

log = logging.getLogger(__name__)
# The copilot's conversation kept for its model (the whole consultation would grow unbounded).
COPILOT_CONTEXT_ITEMS = 80


def tools_of(consultation: Consultation, names: list[str]) -> list[Any]:
    """The role's tools that this deployment offers (vision can be off entirely)."""
    off = set() if vision.enabled(consultation.settings) else {vision.TOOL}
    return [TOOLS[name] for name in names if name not in off]


class ClinicalAgent(Agent):
    """An Agent whose clinical instructions and tools open only once consent is given (for a
    role that asks for it), and which can add camera frames to the patient's turns."""

    def __init__(self, consultation: Consultation, instructions: str) -> None:
        self.consultation = consultation
        self.gate = consultation.part(ConsentGate)
        self._instructions_open = instructions
        self._tools_open = tools_of(consultation, consultation.role.tools)
        if self.gate.required:
            before = tools_of(
                consultation, [n for n in consultation.role.tools if n in consent.BEFORE_CONSENT]
            )
            super().__init__(
                instructions=self.gate.phase_instructions(instructions, recording=False),
                tools=before,
            )
        else:
            super().__init__(instructions=instructions, tools=self._tools_open)
        self._asking: asyncio.Task[None] | None = None

    async def on_enter(self) -> None:
        if not self.gate.required or self.gate.status != "pending":
            return
        try:
            room_io = self.session.room_io
        except RuntimeError:  # no room (tests): ask now
            await self._ask()
            return
        # Not into an empty room: once someone is linked (as the runtime's greeting does).
        self._asking = asyncio.create_task(self._ask(room_io), name="mediai-consent")

    async def _ask(self, room_io: Any = None) -> None:
        if room_io is not None:
            await room_io.wait_for_ready()
        question = self.gate.ask()
        if self.gate.recording_asked:
            await super().update_instructions(
                self.gate.phase_instructions(self._instructions_open, recording=True)
            )
        speak(self.session, question)

    async def open_consultation(self) -> None:
        """Consent was given: the role's own instructions and all its tools from now on."""
        await super().update_instructions(self._instructions_open)
        await self.update_tools(self._tools_open)

    async def update_instructions(self, instructions: str) -> None:
        # A dispatch's new instructions (the runtime's command) never skip the consent phase.
        self._instructions_open = instructions
        if self.gate.open:
            await super().update_instructions(instructions)
        else:
            await super().update_instructions(
                self.gate.phase_instructions(instructions, recording=self.gate.recording_asked)
            )

    async def on_user_turn_completed(
        self, turn_ctx: llm.ChatContext, new_message: llm.ChatMessage
    ) -> None:
        if self.gate.open and self.consultation.has_part(vision.FrameSampler):
            frame = self.consultation.part(vision.FrameSampler).take()
            if frame is not None:
                new_message.content.append(frame)


def build_agent(consultation: Consultation, instructions: str) -> ClinicalAgent:
    """The agent of a medical consultation (any role: without consent or vision tools it is a
    plain agent with the role's instructions and tools)."""
    return ClinicalAgent(consultation, instructions)


class Medical:
    """The medical part of one ``SessionRuntime`` (typed ``Any`` to keep session.py the only
    module that knows the runtime)."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        room = runtime.ctx.room
        self.consultation = Consultation(
            tenant=runtime.meta.tenant,
            room=runtime.request.room,
            dispatch_id=runtime.meta.dispatch_id,
            role=runtime.role,
            settings=runtime.deps.settings,
            emit=runtime.reporter.emit,
            finish=runtime.finish_soon,
            patient=self._patient,
            nc=runtime.bus.nc,
            rtc_room=room,
            language=runtime.request.language,
            avatar=runtime.request.avatar,
            patient_ref=runtime.request.patient_ref,
            appointment_id=runtime.request.appointment_id,
            patient_is_minor=runtime.request.patient_is_minor,
        )
        self._listener: RoomListener | None = None
        self._wake = asyncio.Event()
        self._heard_since: list[llm.ChatMessage] = []
        self._replying: asyncio.Task[None] | None = None

    def _patient(self) -> str:
        try:
            linked = self.runtime.session.room_io.linked_participant
        except RuntimeError:
            linked = None
        return str(linked.identity if linked is not None else self.runtime.request.participant)

    @property
    def hears_everyone(self) -> bool:
        """A text-only role with an STT hears each person apart (RoomListener), not through the
        session's one linked participant."""
        return not self.runtime.role.speaks and self.runtime.models.stt is not None

    def agent(self, instructions: str) -> ClinicalAgent:
        return build_agent(self.consultation, instructions)

    def room_options(self) -> dict[str, bool]:
        """What RoomIO takes: the session's own audio input (not for a copilot hearing everyone),
        and live video only in streaming mode with a realtime model (which takes video)."""
        role, settings = self.runtime.role, self.consultation.settings
        live_video = role.vision and vision.streaming(settings) and self.runtime.models.realtime
        return {"audio_input": not self.hears_everyone, "video_input": bool(live_video)}

    async def before_start(self) -> None:
        """Before ``AgentSession.start``: an avatar takes over the agent's audio output."""
        avatar = self.consultation.part(Avatar)
        self.consultation.avatar_seconds = avatar.seconds
        await avatar.start(
            self.runtime.session,
            self.runtime.ctx.room,
            agent_identity=self.runtime.ctx.room.local_participant.identity,
        )

    def started(self) -> None:
        runtime, c = self.runtime, self.consultation
        runtime.session.on("conversation_item_added", c.transcript.on_item)
        if not runtime.role.speaks:
            copilot = c.part(Copilot)
            copilot.sender = HintSender(
                runtime.ctx.room,
                topic=runtime.role.text_topic,
                recipients=lambda: runtime.presence.humans(runtime.role.text_to),
            )
            runtime.session.output.transcription = HintOutput(copilot)
        if self.hears_everyone:
            prefixes = runtime.role.listens_to
            self._listener = RoomListener(
                runtime.ctx.room,
                stt=runtime.models.stt,
                vad=runtime.deps.vad,
                qualifies=lambda p: is_human(p) and matches(p.identity, prefixes),
                on_final=self._heard,
            )
            self._listener.start()
            self._replying = asyncio.create_task(self._reply_forever(), name="mediai-copilot")
        if runtime.role.vision and vision.streaming(c.settings) and not runtime.models.realtime:
            c.part(vision.FrameSampler).start()

    def _heard(self, identity: str, text: str) -> None:
        """A final segment of someone in the room (copilot): into the model's conversation,
        labelled by who said it, onto the PHI stream, and a reply (a hint, or nothing) asked."""
        role = self.runtime.role
        speaker = self.runtime.ctx.room.remote_participants.get(identity)
        is_doctor = speaker is not None and person_role(speaker.attributes) == DOCTOR
        who = "Médico" if is_doctor else "Paciente"
        message = llm.ChatMessage(role="user", content=[f"{who}: {text}"])
        self._heard_since.append(message)
        c = self.consultation
        c.transcript.add(message.id, "user", text)
        c.emit(
            AgentTranscribed(
                dispatch_id=c.dispatch_id,
                room=c.room,
                role=role.name,
                segment_id=message.id,
                speaker="user",
                participant_identity=identity,
                text=text,
                language=c.language,
                spoken_at=utcnow(),
                patient_ref=c.patient_ref,
            )
        )
        self._wake.set()

    async def _reply_forever(self) -> None:
        # One reply at a time; what is heard meanwhile is answered by the next one.
        session: AgentSession[Any] = self.runtime.session
        agent = self.runtime.agent
        while True:
            await self._wake.wait()
            self._wake.clear()
            heard, self._heard_since = self._heard_since, []
            chat_ctx = agent.chat_ctx.copy()
            chat_ctx.items.extend(heard)
            await agent.update_chat_ctx(chat_ctx.truncate(max_items=COPILOT_CONTEXT_ITEMS))
            try:
                await session.generate_reply()
            except RuntimeError as error:  # the session is closing
                log.debug("copilot reply skipped: %s", error)
                return

    async def closing(self) -> None:
        """At shutdown, before the final usage: what was collected is published, tasks end."""
        c = self.consultation
        if c.has_part(Intake):
            c.part(Intake).close()
        if c.has_part(Avatar):
            c.part(Avatar).close()
        if self._replying is not None:
            self._replying.cancel()
        if self._listener is not None:
            await self._listener.close()
        if c.has_part(Copilot):
            await c.part(Copilot).close()
        if c.has_part(vision.FrameSampler):
            await c.part(vision.FrameSampler).close()
