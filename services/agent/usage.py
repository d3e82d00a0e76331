"""Usage metering: livekit-agents' cumulative per-model usage turned into per-period deltas.

The session keeps running totals (``AgentSession.usage``); each report publishes what changed
since the previous one, so reports can be summed and a lost report loses only its period.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec

from shared.events.agents import AgentUsageReported


class Totals(msgspec.Struct, frozen=True, kw_only=True):
    """Cumulative usage of one session, in the units billing uses."""

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
    video_seconds: float = 0.0
    avatar_seconds: float = 0.0

    def minus(self, other: Totals) -> Totals:
        return Totals(
            **{name: getattr(self, name) - getattr(other, name) for name in self.__struct_fields__}
        )


def totals_from_model_usage(
    usage: Iterable[Any], *, video_seconds: float = 0.0, avatar_seconds: float = 0.0
) -> Totals:
    """Sum livekit-agents' ``ModelUsage`` items (LLM/STT/TTS, any provider) into Totals."""
    values: dict[str, float] = dict.fromkeys(Totals.__struct_fields__, 0)
    for item in usage:
        kind = getattr(item, "type", "")
        if kind == "llm_usage":
            values["llm_prompt_tokens"] += item.input_tokens
            values["llm_completion_tokens"] += item.output_tokens
            values["llm_cached_tokens"] += item.input_cached_tokens
            # Realtime models report audio and text apart; a text LLM leaves these at zero.
            values["realtime_input_audio_tokens"] += item.input_audio_tokens
            values["realtime_output_audio_tokens"] += item.output_audio_tokens
            values["realtime_input_text_tokens"] += item.input_text_tokens
            values["realtime_output_text_tokens"] += item.output_text_tokens
        elif kind == "stt_usage":
            values["stt_audio_seconds"] += item.audio_duration
        elif kind == "tts_usage":
            values["tts_characters"] += item.characters_count
            values["tts_audio_seconds"] += item.audio_duration
    values["video_seconds"] = video_seconds
    values["avatar_seconds"] = avatar_seconds
    return msgspec.convert(values, Totals, strict=False)


class UsageMeter:
    """Turns successive cumulative totals into ``AgentUsageReported`` deltas.

    Pure: the caller passes the totals and the time; nothing here reads a clock.
    """

    def __init__(
        self,
        *,
        dispatch_id: str,
        room: str,
        role: str,
        started_at: datetime,
        provider: str = "",
        llm_model: str = "",
        stt_model: str = "",
        tts_model: str = "",
    ) -> None:
        self._ids: dict[str, Any] = {"dispatch_id": dispatch_id, "room": room, "role": role}
        self._models: dict[str, Any] = {
            "provider": provider,
            "llm_model": llm_model,
            "stt_model": stt_model,
            "tts_model": tts_model,
        }
        self._last = Totals()
        self._period_start = started_at
        self._sequence = 0
        self.finished = False

    def report(self, totals: Totals, now: datetime, *, final: bool = False) -> AgentUsageReported:
        """The usage since the previous report; the last one is ``final`` (no more after it)."""
        if self.finished:
            raise RuntimeError("the final usage report was already made")
        delta = totals.minus(self._last)
        self._sequence += 1
        report = AgentUsageReported(
            **self._ids,
            **self._models,
            **msgspec.structs.asdict(delta),
            period_start=self._period_start,
            period_end=now,
            session_seconds=max(0.0, (now - self._period_start).total_seconds()),
            final=final,
            sequence=self._sequence,
        )
        self._last, self._period_start = totals, now
        self.finished = final
        return report
