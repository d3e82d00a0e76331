"""Who in the room an agent listens to, who reads a text-only agent (by the role signed into
their token, never by their identity), and when the room is empty."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from livekit import rtc
from livekit.agents.voice import io

from shared.participants import person_role

log = logging.getLogger(__name__)

HUMAN_KINDS = (
    rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
    rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
)
# An identity no participant can have (identities start with a letter or digit): RoomIO linked
# to it listens to nobody until we link it to someone the role may listen to.
NOBODY = "~nobody"


def is_human(participant: rtc.RemoteParticipant) -> bool:
    return participant.kind in HUMAN_KINDS


def matches(identity: str, prefixes: list[str]) -> bool:
    return not prefixes or identity.startswith(tuple(prefixes))


class Presence:
    """Links the session to a participant the role listens to and notices an empty room.

    ``participant`` (from the dispatch) wins over the role's ``listens_to`` prefixes; with
    neither, the agent listens to the first person in the room. When the linked person leaves
    it switches to another one who qualifies. ``on_empty`` is called once: when the last person
    leaves, or when nobody came within ``empty_timeout`` seconds.
    """

    def __init__(
        self,
        room: rtc.Room,
        *,
        participant: str,
        listens_to: list[str],
        empty_timeout: float,
        on_empty: Callable[[str], None],
    ) -> None:
        self.room = room
        self.participant, self.prefixes = participant, listens_to
        self.empty_timeout, self.on_empty = empty_timeout, on_empty
        self.had_someone = any(is_human(p) for p in room.remote_participants.values())
        self._room_io: Any = None
        self._timer: asyncio.Task[None] | None = None
        self._notified = False

    def qualifies(self, participant: rtc.RemoteParticipant) -> bool:
        if not is_human(participant):
            return False
        if self.participant:
            return participant.identity == self.participant
        return matches(participant.identity, self.prefixes)

    def candidate(self) -> str | None:
        return next(
            (p.identity for p in self.room.remote_participants.values() if self.qualifies(p)), None
        )

    def initial_identity(self) -> str:
        """What RoomIO starts linked to: someone who qualifies, or nobody yet."""
        return self.candidate() or NOBODY

    def humans(self, roles: list[str] | None = None) -> list[str]:
        """The people in the room; with ``roles``, only those whose token gave them one of these
        roles (``mediai.role``, shared/participants.py): a patient named ``doctora-ana`` is no
        doctor."""
        return [
            p.identity
            for p in self.room.remote_participants.values()
            if is_human(p) and (roles is None or person_role(p.attributes) in roles)
        ]

    def attach(self, room_io: Any) -> None:
        self._room_io = room_io
        self.room.on("participant_connected", self._on_connected)
        self.room.on("participant_disconnected", self._on_disconnected)
        if not self.had_someone:
            self._timer = asyncio.create_task(self._nobody_came(), name="mediai-empty-room")
        elif not self.humans():
            # Everyone left while the session was starting, before these handlers listened.
            self._notify("room_empty")

    def detach(self) -> None:
        self.room.off("participant_connected", self._on_connected)
        self.room.off("participant_disconnected", self._on_disconnected)
        if self._timer is not None:
            self._timer.cancel()

    def _linked(self) -> str | None:
        linked = self._room_io.linked_participant if self._room_io else None
        return linked.identity if linked is not None else None

    def _on_connected(self, participant: rtc.RemoteParticipant) -> None:
        if not is_human(participant):
            return
        self.had_someone = True
        if self._timer is not None:
            self._timer.cancel()
        if self._linked() is None and self.qualifies(participant) and self._room_io:
            self._room_io.set_participant(participant.identity)

    def _on_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        if not is_human(participant):
            return
        if self._room_io is not None and self._linked() in (None, participant.identity):
            self._room_io.set_participant(self.candidate() or NOBODY)
        if not self.humans():
            self._notify("room_empty")

    async def _nobody_came(self) -> None:
        await asyncio.sleep(self.empty_timeout)
        if not self.humans():
            self._notify("room_empty")

    def _notify(self, reason: str) -> None:
        if not self._notified:
            self._notified = True
            self.on_empty(reason)


class ParticipantsTextOutput(io.TextOutput):
    """The text output of a role that does not speak: each finished reply is sent, as a text
    stream on ``topic``, only to the participants ``recipients()`` names."""

    def __init__(self, room: rtc.Room, *, topic: str, recipients: Callable[[], list[str]]) -> None:
        super().__init__(label="mediai-participants-text", next_in_chain=None)
        self.room, self.topic, self.recipients = room, topic, recipients
        self._buffer: list[str] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def capture_text(self, text: str) -> None:
        self._buffer.append(text)

    def flush(self) -> None:
        text, self._buffer = "".join(self._buffer).strip(), []
        if text:
            self.send(text)

    def send(self, text: str) -> None:
        identities = self.recipients()
        if not identities:
            log.info("text-only agent: nobody to send a message to; dropped")
            return
        task = asyncio.create_task(self._send(text, identities))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, text: str, identities: list[str]) -> None:
        try:
            await self.room.local_participant.send_text(
                text, topic=self.topic, destination_identities=identities
            )
        except Exception as error:  # noqa: BLE001 - a lost hint must not end the session
            log.warning("text-only agent: sending a message failed: %s", type(error).__name__)
