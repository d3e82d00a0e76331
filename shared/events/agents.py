"""Events of agent dispatches, the worker pool and agent sessions."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from shared.events.base import Event


class AgentUsageReported(Event, frozen=True, kw_only=True):
    """What an agent session used during ``[period_start, period_end)``: deltas, not totals.

    Published every period while the session runs and once more (``final``) at its end, so a
    crash loses at most one period. Billing sums these; each report counts once (by event id).
    """

    TYPE: ClassVar[str] = "mediai.agent.usage_reported.v1"
    PRODUCER: ClassVar[str] = "agent"
    dispatch_id: str
    room: str
    role: str
    period_start: datetime
    period_end: datetime
    final: bool = False
    llm_model: str = ""
    llm_prompt_tokens: int = 0
    llm_completion_tokens: int = 0
    llm_cached_tokens: int = 0
    stt_audio_seconds: float = 0.0
    tts_characters: int = 0
    tts_audio_seconds: float = 0.0
    realtime_input_audio_tokens: int = 0
    realtime_output_audio_tokens: int = 0
    realtime_input_text_tokens: int = 0
    realtime_output_text_tokens: int = 0
    session_seconds: float = 0.0
    video_seconds: float = 0.0
    avatar_seconds: float = 0.0


EVENTS: tuple[type[Event], ...] = (AgentUsageReported,)
