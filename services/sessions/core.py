"""The session timeline, pure: what each event of the log adds to a session's story.

A session is one LiveKit room session (its room SID: room names are reused) or, for an agent
whose dispatch never reached a room, that dispatch (the consultation). Room events carry the
SID; agent events carry their dispatch, which is linked to a room session by the agent's own
participant (the identity its ``AgentSessionStarted`` names joins that SID), so events may
arrive in any order, from either stream, and still land in the right session.

Every entry splits what anyone with the tenant's sessions may read (``data``: kinds, states,
tools, quantities, ids) from what only callers allowed to read personal data get
(``personal``: what was said, hint texts, red flags' descriptions, instructions, names). The
personal parts are kept as the log carries them, sealed with the patient's keys
(``shared.phi``), each under the name of the event field it came from (the path its seal is
bound to), and opened only to answer a caller who may read them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from shared.events import Envelope, Event
from shared.events.agents import (
    AgentCommandIssued,
    AgentDispatched,
    AgentDispatchFailed,
    AgentDispatchRequested,
    AgentEndRequested,
    AgentSessionEnded,
    AgentSessionFailed,
    AgentSessionStarted,
    AgentStateChanged,
    AgentToolCalled,
    AgentTranscribed,
    AgentUsageReported,
)
from shared.events.clinical import (
    AnamnesisRecorded,
    AvatarUnavailable,
    ConsentGiven,
    ConsentRefused,
    CopilotHintSent,
    CopilotHintWritten,
    RedFlagRaised,
)
from shared.events.reconciliation import (
    ParticipantFound,
    ParticipantPresumedGone,
    RoomFound,
    RoomPresumedFinished,
)
from shared.events.rooms import ParticipantJoined, ParticipantLeft, RoomFinished, RoomStarted

# A dispatch's states in the order they happen; a late event never moves one back.
STATES = ("requested", "dispatched", "joined", "ended", "failed")


@dataclass(frozen=True)
class Entry:
    """One line of a timeline. ``key`` is unique per tenant: the event's id, or what joins two
    events into one line (a hint's id: its count on the business log, its text on the PHI
    stream)."""

    key: str
    kind: str
    at: datetime
    data: dict[str, Any]
    personal: dict[str, Any] | None = None
    room_sid: str = ""
    dispatch_id: str = ""
    patient_ref: str = ""
    trace_id: str = ""


@dataclass(frozen=True)
class RoomSession:
    room_sid: str
    room: str
    started_at: datetime | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True)
class Dispatch:
    """What an event says of a dispatch; empty fields say nothing (kept as they were)."""

    dispatch_id: str
    room: str
    role: str = ""
    state: str = ""
    patient_ref: str = ""
    agent_identity: str = ""
    requested_at: datetime | None = None
    ended_at: datetime | None = None


@dataclass(frozen=True)
class AgentSeen:
    """An agent's participant in a room session: links its dispatch to the session."""

    room_sid: str
    room: str
    identity: str


@dataclass(frozen=True)
class Fold:
    entries: tuple[Entry, ...] = ()
    rooms: tuple[RoomSession, ...] = ()
    dispatches: tuple[Dispatch, ...] = ()
    agents: tuple[AgentSeen, ...] = ()


def trace_id(traceparent: str | None) -> str:
    """The trace id of a W3C ``traceparent`` (``00-<trace id>-<span id>-<flags>``), or ""."""
    parts = (traceparent or "").split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
        return parts[1].lower()
    return ""


def _fields(data: Event, *names: str) -> dict[str, Any]:
    built = msgspec.to_builtins(data)
    return {_camel(n): built[n] for n in names if built.get(n) not in (None, "", [], {})}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _entry(event: Envelope, kind: str, at: datetime, data: dict[str, Any], **more: Any) -> Entry:
    return Entry(
        key=more.pop("key", event.id),
        kind=kind,
        at=at,
        data=data,
        trace_id=trace_id(event.traceparent),
        **more,
    )


# -- room sessions ---------------------------------------------------------------------------


def _room_started(e: Envelope, d: RoomStarted | RoomFound) -> Fold:
    at = d.started_at if isinstance(d, RoomStarted) else (d.created_at or d.observed_at)
    kind = "room_started" if isinstance(d, RoomStarted) else "room_found"
    return Fold(
        entries=(_entry(e, kind, at, {"room": d.room}, room_sid=d.room_sid),),
        rooms=(RoomSession(d.room_sid, d.room, started_at=at),),
    )


def _room_finished(e: Envelope, d: RoomFinished | RoomPresumedFinished) -> Fold:
    if isinstance(d, RoomFinished):
        at, data = d.finished_at, _fields(d, "room", "end_reason")
        kind = "room_finished"
    else:
        at, data, kind = d.last_seen_at, {"room": d.room}, "room_presumed_finished"
    return Fold(
        entries=(_entry(e, kind, at, data, room_sid=d.room_sid),),
        rooms=(RoomSession(d.room_sid, d.room, finished_at=at),),
    )


def _joined(e: Envelope, d: ParticipantJoined | ParticipantFound) -> Fold:
    at = d.joined_at if isinstance(d, ParticipantJoined) else (d.joined_at or d.observed_at)
    kind = "participant_joined" if isinstance(d, ParticipantJoined) else "participant_found"
    entry = _entry(
        e,
        kind,
        at,
        _fields(d, "identity", "kind", "patient_ref"),
        personal={"name": d.name} if d.name else None,
        room_sid=d.room_sid,
        patient_ref=d.patient_ref,
    )
    agents = (AgentSeen(d.room_sid, d.room, d.identity),) if d.kind == "agent" else ()
    return Fold(
        entries=(entry,) if d.room_sid else (), rooms=_implied(d.room_sid, d.room), agents=agents
    )


def _left(e: Envelope, d: ParticipantLeft | ParticipantPresumedGone) -> Fold:
    if isinstance(d, ParticipantLeft):
        at, kind = d.left_at, "participant_left"
        data = _fields(d, "identity", "kind", "disconnect_reason", "aborted")
    else:
        at, kind = d.last_seen_at, "participant_presumed_gone"
        data = _fields(d, "identity", "kind")
    entries = (_entry(e, kind, at, data, room_sid=d.room_sid),) if d.room_sid else ()
    return Fold(entries=entries, rooms=_implied(d.room_sid, d.room))


def _implied(room_sid: str, room: str) -> tuple[RoomSession, ...]:
    return (RoomSession(room_sid, room),) if room_sid else ()


# -- dispatches and their agents -------------------------------------------------------------


def _agent(e: Envelope, d: Any, kind: str, at: datetime, data: dict[str, Any], **more: Any) -> Fold:
    dispatch = more.pop("dispatch", None) or Dispatch(d.dispatch_id, d.room)
    entry = _entry(e, kind, at, data, dispatch_id=d.dispatch_id, **more)
    return Fold(entries=(entry,), dispatches=(dispatch,))


def _requested(e: Envelope, d: AgentDispatchRequested) -> Fold:
    data = _fields(d, "role", "stt", "llm", "tts", "realtime", "language", "instructions_mode")
    data.update(_fields(d, "participant", "patient_ref", "appointment_id", "patient_is_minor"))
    return _agent(
        e,
        d,
        "dispatch_requested",
        d.requested_at,
        data,
        personal={"instructions": d.instructions} if d.instructions else None,
        patient_ref=d.patient_ref,
        dispatch=Dispatch(
            d.dispatch_id,
            d.room,
            role=d.role,
            state="requested",
            patient_ref=d.patient_ref,
            requested_at=d.requested_at,
        ),
    )


def _dispatched(e: Envelope, d: AgentDispatched) -> Fold:
    state = Dispatch(d.dispatch_id, d.room, role=d.role, state="dispatched")
    return _agent(e, d, "dispatched", d.dispatched_at, {"role": d.role}, dispatch=state)


def _failed(e: Envelope, d: AgentDispatchFailed | AgentSessionFailed) -> Fold:
    kind = "dispatch_failed" if isinstance(d, AgentDispatchFailed) else "session_failed"
    state = Dispatch(d.dispatch_id, d.room, role=d.role, state="failed", ended_at=d.failed_at)
    data = _fields(d, "role", "reason", "detail")
    return _agent(e, d, kind, d.failed_at, data, dispatch=state)


def _started(e: Envelope, d: AgentSessionStarted) -> Fold:
    data = _fields(d, "role", "agent_identity", "stt", "llm", "tts", "realtime", "language")
    state = Dispatch(
        d.dispatch_id, d.room, role=d.role, state="joined", agent_identity=d.agent_identity
    )
    return _agent(e, d, "agent_joined", d.started_at, data, dispatch=state)


def _ended(e: Envelope, d: AgentSessionEnded) -> Fold:
    failed = d.reason == "error"
    state = Dispatch(
        d.dispatch_id,
        d.room,
        role=d.role,
        state="failed" if failed else "ended",
        ended_at=d.ended_at,
    )
    data = _fields(d, "role", "reason", "detail", "duration_seconds")
    return _agent(e, d, "agent_left", d.ended_at, data, dispatch=state)


def _end_requested(e: Envelope, d: AgentEndRequested) -> Fold:
    return _agent(e, d, "end_requested", d.requested_at, _fields(d, "requested_by"))


def _state(e: Envelope, d: AgentStateChanged) -> Fold:
    return _agent(e, d, "agent_state", d.changed_at, _fields(d, "state", "detail"))


def _transcribed(e: Envelope, d: AgentTranscribed) -> Fold:
    data = _fields(d, "speaker", "participant_identity", "segment_id", "interrupted", "language")
    return _agent(
        e,
        d,
        "transcript",
        d.spoken_at,
        data,
        personal={"text": d.text},
        patient_ref=d.patient_ref,
    )


def _tool(e: Envelope, d: AgentToolCalled) -> Fold:
    data = _fields(d, "tool", "call_id", "duration_seconds")
    data["ok"] = d.ok
    return _agent(e, d, "tool_call", d.called_at, data)


USAGE_FIELDS = (
    "llm_prompt_tokens",
    "llm_completion_tokens",
    "llm_cached_tokens",
    "stt_audio_seconds",
    "tts_characters",
    "tts_audio_seconds",
    "realtime_input_audio_tokens",
    "realtime_output_audio_tokens",
    "realtime_input_text_tokens",
    "realtime_output_text_tokens",
    "session_seconds",
    "video_seconds",
    "avatar_seconds",
)


def _usage(e: Envelope, d: AgentUsageReported) -> Fold:
    data = _fields(d, "sequence", "final", "llm_model", "stt_model", "tts_model")
    # Only what was used: a realtime session has no TTS characters, a pipeline no audio tokens.
    data["quantities"] = {k: v for k, v in _fields(d, *USAGE_FIELDS).items() if v}
    return _agent(e, d, "usage", d.period_end, data)


def _command(e: Envelope, d: AgentCommandIssued) -> Fold:
    personal = {"text": d.text} if d.text else None
    return _agent(
        e,
        d,
        "command",
        d.issued_at,
        {"command": d.command},
        personal=personal,
        patient_ref=d.patient_ref,
    )


# -- clinical --------------------------------------------------------------------------------


def _consent(e: Envelope, d: ConsentGiven | ConsentRefused) -> Fold:
    given = isinstance(d, ConsentGiven)
    data = _fields(d, "participant_identity", "wording", "recording", "segment_ids")
    data.update(_fields(d, "given_by", "refused_by", "refused", "guardian_relation"))
    data["given"] = given
    at = d.given_at if isinstance(d, ConsentGiven) else d.refused_at
    return _agent(e, d, "consent", at, data, patient_ref=d.patient_ref)


def _hint_sent(e: Envelope, d: CopilotHintSent) -> Fold:
    data = _fields(d, "hint_id", "kind", "sequence", "recipients")
    return _agent(e, d, "hint", d.sent_at, data, key=f"hint:{d.hint_id}")


def _hint_written(e: Envelope, d: CopilotHintWritten) -> Fold:
    data = _fields(d, "hint_id", "kind", "segment_ids", "recipients")
    personal = {"text": d.text}
    return _agent(
        e,
        d,
        "hint",
        d.sent_at,
        data,
        key=f"hint:{d.hint_id}",
        personal=personal,
        patient_ref=d.patient_ref,
    )


def _red_flag(e: Envelope, d: RedFlagRaised) -> Fold:
    data = _fields(d, "category", "participant_identity", "segment_ids")
    personal = {"description": d.description} if d.description else None
    return _agent(e, d, "red_flag", d.raised_at, data, personal=personal, patient_ref=d.patient_ref)


def _anamnesis(e: Envelope, d: AnamnesisRecorded) -> Fold:
    data = {
        "status": d.questionnaire_response.get("status", ""),
        "answers": len(d.transcript_refs),
        **_fields(d, "appointment_id", "patient_ref"),
    }
    personal = {"summary_pt_br": d.summary_pt_br}
    return _agent(e, d, "anamnesis", e.time, data, personal=personal, patient_ref=d.patient_ref)


def _avatar(e: Envelope, d: AvatarUnavailable) -> Fold:
    return _agent(e, d, "avatar_unavailable", d.at, _fields(d, "provider", "reason", "detail"))


FOLDS: dict[type[Event], Callable[[Envelope, Any], Fold]] = {
    RoomStarted: _room_started,
    RoomFound: _room_started,
    RoomFinished: _room_finished,
    RoomPresumedFinished: _room_finished,
    ParticipantJoined: _joined,
    ParticipantFound: _joined,
    ParticipantLeft: _left,
    ParticipantPresumedGone: _left,
    AgentDispatchRequested: _requested,
    AgentDispatched: _dispatched,
    AgentDispatchFailed: _failed,
    AgentSessionFailed: _failed,
    AgentSessionStarted: _started,
    AgentSessionEnded: _ended,
    AgentEndRequested: _end_requested,
    AgentStateChanged: _state,
    AgentToolCalled: _tool,
    AgentUsageReported: _usage,
    ConsentGiven: _consent,
    ConsentRefused: _consent,
    CopilotHintSent: _hint_sent,
    AvatarUnavailable: _avatar,
    # The PHI stream: what was said and written about the patient.
    AgentTranscribed: _transcribed,
    AgentCommandIssued: _command,
    CopilotHintWritten: _hint_written,
    RedFlagRaised: _red_flag,
    AnamnesisRecorded: _anamnesis,
}


def fold(event: Envelope) -> Fold:
    """What ``event`` adds to the timelines of its tenant."""
    return FOLDS[type(event.data)](event, event.data)


def state_rank(state: str) -> int:
    """A dispatch's state as a number that only grows (0: unknown)."""
    return STATES.index(state) + 1 if state in STATES else 0
