"""One simulated consultation, the driver the agent benches share: a patient (the rtc SDK,
tests/test_agent_e2e.Participant) joins a new room, an agent is dispatched to it (MediAI's
``POST /v1/agents`` or a bare worker through LiveKit's ``CreateDispatch``), and the time until
the patient sees the agent in the room; then the patient says the same sentence (real speech,
tests/data) a few times, each time after the agent's answer has ended, and the time from the end
of the speech to the first audible frames of the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
import numpy as np
from livekit import api as lk

from tests.test_agent_e2e import OPENAI, Participant, speech

JOIN_TIMEOUT = 30.0
ANSWER_TIMEOUT = 20.0
# The answer is over once the agent has been quiet this long (its TTS pauses between phrases
# are shorter); the patient speaks again only then, so a turn never interrupts the last answer.
QUIET_SECONDS = 1.0
# The agent's audio output and VAD are set up just after it joins: the patient gives it this
# moment before speaking (as a person would take longer).
SETTLE_SECONDS = 0.5


class Side(Protocol):
    """How one kind of agent is dispatched to a room and sent away again."""

    name: str

    async def dispatch(self, room: str, livekit_room: str) -> tuple[str, str]:
        """("accepted", handle) or ("refused", the error code) at once. ``room`` is the
        tenant's name for it, ``livekit_room`` LiveKit's (shared/naming.py)."""
        ...

    async def end(self, livekit_room: str, handle: str) -> None: ...

    async def fate(self, handle: str) -> str:
        """What became of a dispatch that brought no agent, if the side can say."""
        ...


@dataclass
class MediAI:
    """``POST /v1/agents`` through the gateway, role ``generic``, OpenAI STT/LLM/TTS."""

    api: httpx.AsyncClient
    name: str = "mediai"

    async def dispatch(self, room: str, livekit_room: str) -> tuple[str, str]:
        response = await self.api.post(
            "/v1/agents", json={"room": room, "role": "generic", **OPENAI}
        )
        if response.status_code == 503:  # agents_at_capacity, no_agent_worker: refused at once
            return "refused", str(response.json()["error"]["code"])
        response.raise_for_status()
        return "accepted", str(response.json()["id"])

    async def end(self, livekit_room: str, handle: str) -> None:
        if handle:
            await self.api.delete(f"/v1/agents/{handle}")

    async def fate(self, handle: str) -> str:
        found = (await self.api.get(f"/v1/agents/{handle}")).json()
        return f"{found.get('state')} {found.get('reason') or ''}".strip()


@dataclass
class Bare:
    """A bare livekit-agents worker (bench/bare_agent.py) dispatched with ``CreateDispatch``;
    ended by deleting the room, as an application without MediAI would."""

    livekit: lk.LiveKitAPI
    agent_name: str
    name: str = "bare"

    async def dispatch(self, room: str, livekit_room: str) -> tuple[str, str]:
        made = await self.livekit.agent_dispatch.create_dispatch(
            lk.CreateAgentDispatchRequest(agent_name=self.agent_name, room=livekit_room)
        )
        return "accepted", made.id

    async def end(self, livekit_room: str, handle: str) -> None:
        await self.livekit.room.delete_room(lk.DeleteRoomRequest(room=livekit_room))

    async def fate(self, handle: str) -> str:
        return ""  # LiveKit keeps no state of a dispatch that no worker took


@dataclass
class Outcome:
    """What one consultation measured. ``status``: "answered" (every turn), "refused" (503 at
    once), "no_agent" (accepted, no agent came), "unanswered" (some turn had no answer)."""

    side: str
    status: str = "answered"
    code: str = ""  # the refusal's error code, or what became of a dispatch without agent
    join_seconds: float | None = None
    answers: list[float] = field(default_factory=list)
    turns: int = 0


def new_room() -> str:
    return f"bench-{uuid.uuid4().hex[:10]}"


class Consultation:
    """One patient in one room; ``join`` first (the patient is there before the agent)."""

    def __init__(self, api: httpx.AsyncClient, side: Side, pcm: tuple[np.ndarray, int]) -> None:
        self.api, self.side, self.pcm = api, side, pcm
        self.room = new_room()
        self.patient: Participant | None = None
        self.handle = ""
        self._joined: asyncio.Future[tuple[float, str]] | None = None

    async def join(self) -> None:
        self.patient = await Participant.join(self.api, self.room, f"patient-{self.room[-6:]}")
        self._joined = asyncio.get_running_loop().create_future()
        joined = self._joined

        def on_join(participant: Any) -> None:
            if not joined.done():
                joined.set_result((time.monotonic(), participant.identity))

        self.patient.room.on("participant_connected", on_join)

    async def run(self, turns: int) -> Outcome:
        """Dispatch, wait for the agent, then ``turns`` turns; never raises for the agent's
        failures (they are the outcome)."""
        assert self.patient is not None
        assert self._joined is not None
        outcome = Outcome(self.side.name, turns=turns)
        asked = time.monotonic()
        status, self.handle = await self.side.dispatch(self.room, self.patient.room.name)
        if status == "refused":
            outcome.status, outcome.code, self.handle = "refused", self.handle, ""
            return outcome
        try:
            seen, agent = await asyncio.wait_for(self._joined, JOIN_TIMEOUT)
        except TimeoutError:
            outcome.status, outcome.code = "no_agent", await self.side.fate(self.handle)
            return outcome
        outcome.join_seconds = seen - asked
        await asyncio.sleep(SETTLE_SECONDS)
        for _ in range(turns):
            answer = await self.turn(agent)
            if answer is None:
                outcome.status = "unanswered"
                break
            outcome.answers.append(answer)
        return outcome

    async def turn(self, agent: str) -> float | None:
        """Seconds from the end of the sentence to the answer's first audible frames (None
        without an answer), once the answer is over."""
        assert self.patient is not None
        ended = await self.patient.say(*self.pcm)
        try:
            first = await self.patient.wait_for_voice(
                ended, agent, frames=3, timeout=ANSWER_TIMEOUT
            )
        except TimeoutError:
            return None
        await self.answer_over(agent)
        return first - ended

    async def answer_over(self, agent: str, timeout: float = ANSWER_TIMEOUT) -> None:
        assert self.patient is not None
        patient = self.patient

        def quiet() -> bool:
            last = patient.loud(0.0, agent)
            return not last or time.monotonic() - last[-1] >= QUIET_SECONDS

        async with asyncio.timeout(timeout):
            while not quiet():  # noqa: ASYNC110 - frames arrive in another task, nothing to await
                await asyncio.sleep(0.1)

    async def close(self) -> None:
        """The patient leaves, then the agent is sent away (no goodbye to an empty room)."""
        livekit_room = self.patient.room.name if self.patient is not None else ""
        if self.patient is not None:
            await self.patient.leave()
        # the room or the dispatch may be gone already: nothing left to end then
        with contextlib.suppress(httpx.HTTPError, lk.TwirpError):
            await self.side.end(livekit_room, self.handle)


async def consult(api: httpx.AsyncClient, side: Side, turns: int = 1) -> Outcome:
    """One whole consultation, alone."""
    consultation = Consultation(api, side, speech())
    await consultation.join()
    try:
        return await consultation.run(turns)
    finally:
        await consultation.close()
