"""What the medical roles' tools share in one session: the consultation, its transcript, its parts.

A tool reaches it with ``consultation_of(context)``: in a worker the session's userdata is the
``SessionRuntime`` and the consultation hangs from it; in tests the userdata is the
``Consultation`` itself, built from a real bus and (when needed) a real room.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from livekit import rtc
from livekit.agents import AgentSession, RunContext
from livekit.agents.llm import ChatMessage, RealtimeModel
from livekit.agents.voice import SpeechHandle

from services.agent.roles import Role
from shared.config import Settings
from shared.events import Event

T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Segment:
    """One final transcript segment (the id is ``AgentTranscribed.segment_id``)."""

    id: str
    speaker: str  # "user" or "agent"
    text: str


@dataclass
class Transcript:
    """The session's final segments in order, so records can cite what they came from."""

    segments: list[Segment] = field(default_factory=list)
    # Segments a record already cites (consent answers, anamnesis answers).
    cited: set[str] = field(default_factory=set)

    def on_item(self, event: Any) -> None:
        """A listener of ``AgentSession``'s ``conversation_item_added``."""
        item = event.item
        if isinstance(item, ChatMessage) and item.role in ("user", "assistant"):
            text = item.text_content or ""
            if text:
                self.add(item.id, "user" if item.role == "user" else "agent", text)

    def add(self, segment_id: str, speaker: str, text: str) -> None:
        if all(s.id != segment_id for s in self.segments[-20:]):
            self.segments.append(Segment(segment_id, speaker, text))

    def last_turn(self) -> list[str]:
        """The patient's latest turn: their segments after the agent last spoke."""
        turn: list[str] = []
        for segment in reversed(self.segments):
            if segment.speaker == "agent":
                if turn:
                    break
                continue
            turn.append(segment.id)
        return list(reversed(turn))

    def user_segments(self) -> list[str]:
        return [s.id for s in self.segments if s.speaker == "user"]

    def cite(self, segment_ids: list[str]) -> None:
        self.cited.update(segment_ids)

    def take_uncited(self) -> list[str]:
        """The patient's segments no record cites yet, now cited."""
        new = [s for s in self.user_segments() if s not in self.cited]
        self.cite(new)
        return new


@dataclass
class Consultation:
    """One dispatch's consultation as the medical tools see it.

    ``emit`` queues an event (the session's ``Reporter.emit``: tenant and key fixed);
    ``finish(reason, detail)`` ends the session gracefully; ``patient()`` is the identity of
    the person the agent is talking to ("" while nobody is linked); ``nc`` is the NATS
    connection the scheduling tools call through. ``patient_ref`` is the dispatch's patient
    (the clinic's pseudonymous id; "" when the dispatch named none), whom every record and
    event about the patient names; ``appointment_id`` the appointment the dispatch came from;
    ``patient_is_minor`` means consent is the guardian's to give.
    """

    tenant: str
    room: str
    dispatch_id: str
    role: Role
    settings: Settings
    emit: Callable[[Event], object]
    finish: Callable[[str, str], None]
    patient: Callable[[], str]
    nc: Any = None
    rtc_room: rtc.Room | None = None
    language: str = "pt-BR"
    transcript: Transcript = field(default_factory=Transcript)
    # The dispatch's avatar ("" = the deployment's MEDIAI_AGENT_AVATAR, "none" = voice only).
    avatar: str = ""
    # Seconds an avatar was in the room (metered apart from the session).
    avatar_seconds: Callable[[], float] = lambda: 0.0
    patient_ref: str = ""
    appointment_id: str = ""
    patient_is_minor: bool = False
    _parts: dict[Any, Any] = field(default_factory=dict)

    def part(self, factory: Callable[[Consultation], T]) -> T:
        """The session's one instance of a tool area's state (made on first use)."""
        if factory not in self._parts:
            self._parts[factory] = factory(self)
        made: T = self._parts[factory]
        return made

    def has_part(self, factory: Callable[[Consultation], Any]) -> bool:
        return factory in self._parts

    def finish_soon(self, reason: str, detail: str = "") -> None:
        """As ``SessionRuntime.finish_soon`` (the shared ``end_conversation`` tool calls it)."""
        self.finish(reason, detail)

    def ids(self) -> dict[str, str]:
        return {"dispatch_id": self.dispatch_id, "room": self.room, "role": self.role.name}


def speak(
    session: AgentSession[Any], text: str, *, allow_interruptions: bool = True
) -> SpeechHandle:
    """Say fixed, reviewed words (consent, emergencies). A realtime model without a TTS cannot
    ``say``: it is told to say them word for word."""
    model = session.llm
    if (
        session.tts is None
        and isinstance(model, RealtimeModel)
        and not model.capabilities.supports_say
    ):
        return session.generate_reply(
            instructions=(
                f'Diga ao paciente exatamente estas palavras, sem acrescentar nada: "{text}"'
            )
        )
    return session.say(text, allow_interruptions=allow_interruptions)


def consultation_of(context: RunContext[Any]) -> Consultation:
    """The consultation of the session a tool runs in."""
    userdata = context.userdata
    found = (
        userdata if isinstance(userdata, Consultation) else getattr(userdata, "consultation", None)
    )
    if not isinstance(found, Consultation):
        raise RuntimeError("this tool needs a medical consultation (services/agent/medical.py)")
    return found
