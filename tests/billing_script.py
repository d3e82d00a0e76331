"""A scripted consultation for billing tests, with its usage computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.events import Envelope, Event, envelope
from shared.events.agents import AgentUsageReported
from shared.events.rooms import EgressEnded, EgressStarted, ParticipantJoined, ParticipantLeft

ROOM = "consult-1"
DISPATCH = "d-intake-1"


def at(hhmmss: str, day: datetime = datetime(2001, 3, 10, tzinfo=UTC)) -> datetime:
    hours, minutes, seconds = (int(part) for part in hhmmss.split(":"))
    return day + timedelta(hours=hours, minutes=minutes, seconds=seconds)


def _usage(start: str, end: str, *, final: bool = False, **fields: float) -> AgentUsageReported:
    return AgentUsageReported(
        dispatch_id=DISPATCH,
        room=ROOM,
        role="intake",
        period_start=at(start),
        period_end=at(end),
        final=final,
        **fields,
    )


def _joined(sid: str, when: str, kind: str = "standard") -> ParticipantJoined:
    return ParticipantJoined(
        room=ROOM, participant_sid=sid, identity=f"id-{sid}", kind=kind, joined_at=at(when)
    )


def _left(sid: str, when: str, kind: str = "standard") -> ParticipantLeft:
    return ParticipantLeft(
        room=ROOM, participant_sid=sid, identity=f"id-{sid}", kind=kind, left_at=at(when)
    )


def consultation() -> list[Event]:
    """Events of one consultation, in a plausible order (a leave before its join included)."""
    return [
        _joined("PA_patient", "12:59:30"),
        EgressStarted(room=ROOM, egress_id="EG_1", started_at=at("13:00:00")),
        _joined("PA_agent", "13:00:05", kind="agent"),
        _usage(
            "13:00:10",
            "13:00:25",
            llm_prompt_tokens=1200,
            llm_completion_tokens=300,
            llm_cached_tokens=200,
            stt_audio_seconds=12.5,
            tts_characters=450,
            tts_audio_seconds=9.25,
            session_seconds=15,
        ),
        _usage(
            "13:00:25",
            "13:00:40",
            llm_prompt_tokens=800,
            llm_completion_tokens=200,
            stt_audio_seconds=10.0,
            tts_characters=300,
            tts_audio_seconds=6.0,
            session_seconds=15,
        ),
        # The doctor's leave webhook overtook the join.
        _left("PA_doctor", "13:02:30"),
        _joined("PA_doctor", "13:00:45"),
        _usage(
            "13:00:40",
            "13:01:05",
            final=True,
            llm_prompt_tokens=500,
            llm_completion_tokens=100,
            session_seconds=25,
        ),
        _joined("PA_nurse", "13:01:00"),  # never leaves: open
        EgressEnded(room=ROOM, egress_id="EG_1", ended_at=at("13:02:00"), status="complete"),
        _left("PA_agent", "13:01:06", kind="agent"),
        _left("PA_patient", "13:03:00"),
    ]


# By hand: 1200+800+500 prompt tokens; 12.5+10 s of STT; the patient 12:59:30-13:03:00 (210 s)
# and the doctor 13:00:45-13:02:30 (105 s); egress 13:00:00-13:02:00; the agent participant is
# billed as agent_session, the nurse is still in the room.
TOTALS = {
    "llm_prompt_tokens": 2500,
    "llm_completion_tokens": 600,
    "llm_cached_tokens": 200,
    "stt_audio": 22_500,
    "tts_characters": 750,
    "tts_audio": 15_250,
    "agent_session": 55_000,
    "agent_sessions": 1,
    "participant_time": 315_000,
    "egress_time": 120_000,
}
# Standard plan v1, half up per line: 1.125→1 (STT), 6 (TTS chars), 9.17→9 (session),
# 10.5→11 (participants), 16 (egress); tokens round to 0.
CENTS = {
    "stt_audio": 1,
    "tts_characters": 6,
    "agent_session": 9,
    "participant_time": 11,
    "egress_time": 16,
}
TOTAL_CENTS = 43
OPEN_INTERVALS = 1
# Participant time per minute window: the patient from 12:59:30, the doctor from 13:00:45.
PARTICIPANT_WINDOWS = {
    at("12:59:00"): 30_000,
    at("13:00:00"): 60_000 + 15_000,
    at("13:01:00"): 60_000 + 60_000,
    at("13:02:00"): 60_000 + 30_000,
}


def envelopes(tenant: str, events: list[Event] | None = None) -> list[Envelope]:
    return [
        envelope(data, source="mediai/test", tenant=tenant, subject=getattr(data, "room", "x"))
        for data in (events if events is not None else consultation())
    ]
