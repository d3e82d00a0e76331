"""The doctor's copilot: hints sent only to the doctor, at most one every few seconds, never the
same twice. A pure policy core decides; the sender writes only to the people whose token says
they are doctors (``mediai.role``, shared/participants.py), never by the spelling of a name.

Each reply of the copilot's model is a candidate hint (one line; empty or "—" for nothing). A
leading ``Pergunta:``, ``Lembrete:`` or ``Alerta:`` sets its kind. The frontend reads hints on
the LiveKit text-stream topic ``mediai.copilot.hints`` (see docs/agents-roles.md): the text is
the hint, the stream's attributes carry ``mediai.hint.id`` and ``mediai.hint.kind``. Anyone in
a room may write on any topic, so a frontend shows a stream as a hint only when ``is_hint``
says so: its sender is an agent whose role is the copilot.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from livekit import rtc
from livekit.agents.voice import io

from services.agent.consultation import Consultation, utcnow
from services.agent.intake_record import fold
from shared.events import new_event_id
from shared.events.clinical import CopilotHintSent, CopilotHintWritten
from shared.participants import ROLE_ATTRIBUTE

log = logging.getLogger(__name__)

TOPIC = "mediai.copilot.hints"
# The copilot's participant carries its role's name in ``mediai.role`` (services/agent/worker.py).
ROLE = "copilot"
Kind = Literal["question", "reminder", "red_flag", "note"]
PREFIXES: dict[str, Kind] = {
    "pergunta": "question",
    "sugestao": "question",
    "sugestão": "question",
    "lembrete": "reminder",
    "alerta": "red_flag",
    "sinal de alerta": "red_flag",
    "atencao": "red_flag",
    "atenção": "red_flag",
    "nota": "note",
}
NOTHING = {"", "-", "—", "nada", "nenhuma", "nenhum", "(nada)", "sem dicas"}
MAX_CHARS = 300


# -- the pure core ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Hint:
    kind: Kind
    text: str

    @property
    def key(self) -> str:
        """What makes two hints the same: their words, whatever the case, accents or stops."""
        return re.sub(r"[^a-z0-9 ]", "", fold(self.text))


def parse_hint(reply: str) -> Hint | None:
    """A model reply as a hint, or None when it says there is nothing worth sending."""
    text = " ".join(reply.split())
    if fold(text) in NOTHING:
        return None
    kind: Kind = "note"
    match = re.match(r"^\W*([\w ]{3,16}?)\s*:\s*(.+)$", text)
    if match and (fold(match.group(1)) in PREFIXES or match.group(1).lower() in PREFIXES):
        kind = PREFIXES.get(match.group(1).lower(), PREFIXES.get(fold(match.group(1)), "note"))
        text = match.group(2).strip()
    if fold(text) in NOTHING:
        return None
    return Hint(kind, text[:MAX_CHARS])


@dataclass(frozen=True)
class PolicyState:
    last_sent_at: datetime | None = None
    seen: frozenset[str] = frozenset()
    sent: int = 0


@dataclass(frozen=True)
class Verdict:
    action: Literal["send", "hold", "drop"]
    reason: str = ""
    # For "hold": when it may be sent.
    at: datetime | None = None


def decide(state: PolicyState, hint: Hint, now: datetime, interval: timedelta) -> Verdict:
    """Send, hold (a red flag that came too soon waits its turn) or drop (a repeat, or an
    ordinary hint that came too soon: by then it is stale)."""
    if hint.key in state.seen:
        return Verdict("drop", "repeated")
    if state.last_sent_at is not None and now - state.last_sent_at < interval:
        if hint.kind == "red_flag":
            return Verdict("hold", "too_soon", state.last_sent_at + interval)
        return Verdict("drop", "too_soon")
    return Verdict("send")


def evolve(state: PolicyState, hint: Hint, now: datetime) -> PolicyState:
    return replace(state, last_sent_at=now, seen=state.seen | {hint.key}, sent=state.sent + 1)


def is_hint(sender: rtc.RemoteParticipant | None) -> bool:
    """The receiver's rule, what every frontend does with a text stream on ``TOPIC``: it is a
    hint only when its sender is an agent (LiveKit sets a participant's kind from its token, and
    no token of the token service can ask for ``agent``) whose ``mediai.role`` is the copilot's.
    LiveKit cannot reserve a topic: a patient may write on this one to the doctor, and that
    stream does arrive; this rule is what makes it no hint. ``sender`` is
    ``room.remote_participants.get(<the stream's sender identity>)``."""
    return (
        sender is not None
        and sender.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        and sender.attributes.get(ROLE_ATTRIBUTE) == ROLE
    )


# -- the edges -------------------------------------------------------------------------------


class HintSender:
    """Writes hints as LiveKit text streams addressed to the given identities only (the
    doctors': ``Presence.humans(["doctor"])``): the SFU delivers a stream with
    ``destination_identities`` to those participants and nobody else."""

    def __init__(
        self, room: rtc.Room, *, recipients: Callable[[], list[str]], topic: str = TOPIC
    ) -> None:
        self.room, self.recipients, self.topic = room, recipients, topic

    async def send(self, hint: Hint, hint_id: str) -> list[str]:
        identities = self.recipients()
        if identities:
            await self.room.local_participant.send_text(
                hint.text,
                topic=self.topic,
                destination_identities=identities,
                attributes={"mediai.hint.id": hint_id, "mediai.hint.kind": hint.kind},
            )
        return identities


@dataclass
class Copilot:
    """One session's hints: the policy's state, the sender, and the events of what was sent."""

    consultation: Consultation
    sender: HintSender | None = None
    state: PolicyState = field(default_factory=PolicyState)
    _held: list[Hint] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def interval(self) -> timedelta:
        return timedelta(seconds=self.consultation.settings.copilot_hint_interval)

    def offer(self, reply: str, now: datetime | None = None) -> Verdict | None:
        """A model reply: sent, held or dropped by the policy (None: it was not a hint)."""
        hint = parse_hint(reply)
        return None if hint is None else self.consider(hint, now or utcnow())

    def consider(self, hint: Hint, now: datetime) -> Verdict:
        verdict = decide(self.state, hint, now, self.interval)
        if verdict.action == "send":
            self.state = evolve(self.state, hint, now)
            self._spawn(self._send(hint, now))
        elif verdict.action == "hold" and verdict.at is not None:
            self._held.append(hint)
            self._spawn(self._release(hint, (verdict.at - now).total_seconds()))
        else:
            log.debug("copilot hint dropped: %s", verdict.reason)
        return verdict

    async def _release(self, hint: Hint, delay: float) -> None:
        await asyncio.sleep(delay)
        if hint in self._held:
            self._held.remove(hint)
            self.consider(hint, utcnow())

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, hint: Hint, now: datetime) -> None:
        if self.sender is None:
            return
        hint_id = new_event_id()
        try:
            recipients = await self.sender.send(hint, hint_id)
        except Exception as error:  # noqa: BLE001 - a lost hint must not end the session
            log.warning("copilot: sending a hint failed: %s", type(error).__name__)
            return
        if not recipients:
            log.info("copilot: no doctor in the room; hint not sent")
            return
        c = self.consultation
        c.emit(
            CopilotHintSent(
                dispatch_id=c.dispatch_id,
                room=c.room,
                hint_id=hint_id,
                kind=hint.kind,
                sequence=self.state.sent,
                recipients=len(recipients),
                sent_at=now,
            )
        )
        c.emit(
            CopilotHintWritten(
                dispatch_id=c.dispatch_id,
                room=c.room,
                hint_id=hint_id,
                kind=hint.kind,
                text=hint.text,
                recipients=recipients,
                segment_ids=c.transcript.last_turn(),
                sent_at=now,
                patient_ref=c.patient_ref,
            )
        )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class HintOutput(io.TextOutput):
    """The copilot session's text output: each finished reply goes through the policy instead
    of straight to the doctor."""

    def __init__(self, copilot: Copilot) -> None:
        super().__init__(label="mediai-copilot-hints", next_in_chain=None)
        self.copilot = copilot
        self._buffer: list[str] = []

    async def capture_text(self, text: str) -> None:
        self._buffer.append(text)

    def flush(self) -> None:
        text, self._buffer = "".join(self._buffer), []
        self.copilot.offer(text)
