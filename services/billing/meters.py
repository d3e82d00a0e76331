"""The meter catalogue: what is counted, from which event fields, and how (data, not code)."""

from __future__ import annotations

from operator import attrgetter
from typing import Any, Literal, NamedTuple

import msgspec

from shared.events.agents import AgentUsageReported
from shared.events.base import Event
from shared.events.reconciliation import ParticipantPresumedGone
from shared.events.rooms import EgressEnded, EgressStarted, ParticipantJoined, ParticipantLeft

Aggregation = Literal["sum", "count", "max", "duration"]


class Source(msgspec.Struct, frozen=True, kw_only=True):
    """One event type a meter reads.

    ``sum``/``max``: ``field`` × ``scale``, rounded to an integer, in the window of ``time_field``.
    ``count``: 1 in the window of ``time_field``. ``duration``: the event gives the start
    (``start_field``) and/or the end (``end_field``) of the interval identified by ``key_field``.
    ``where`` keeps only events whose fields have one of the listed values.
    """

    type: str
    time_field: str = ""
    field: str = ""
    scale: int = 1
    key_field: str = ""
    start_field: str = ""
    end_field: str = ""
    where: dict[str, tuple[Any, ...]] = {}


class Meter(msgspec.Struct, frozen=True, kw_only=True):
    """A metered quantity, counted in an integer base ``unit``."""

    id: str
    unit: str
    aggregation: Aggregation
    sources: tuple[Source, ...]
    description: str = ""


def _agent(meter: str, field: str, unit: str, description: str, scale: int = 1) -> Meter:
    source = Source(
        type=AgentUsageReported.TYPE, time_field="period_start", field=field, scale=scale
    )
    return Meter(id=meter, unit=unit, aggregation="sum", sources=(source,), description=description)


# Participants billed by their own meters (agents by agent_session, egress by egress_time) are
# not counted again as participant time.
BILLED_PARTICIPANT_KINDS = ("standard", "sip", "ingress")

CATALOGUE: tuple[Meter, ...] = (
    _agent("llm_prompt_tokens", "llm_prompt_tokens", "token", "LLM input tokens"),
    _agent("llm_completion_tokens", "llm_completion_tokens", "token", "LLM output tokens"),
    _agent(
        "llm_cached_tokens",
        "llm_cached_tokens",
        "token",
        "LLM input tokens served from the provider's cache (a part of the input tokens)",
    ),
    _agent("stt_audio", "stt_audio_seconds", "millisecond", "Audio transcribed", 1000),
    _agent("tts_characters", "tts_characters", "character", "Characters synthesised"),
    _agent("tts_audio", "tts_audio_seconds", "millisecond", "Audio synthesised", 1000),
    _agent(
        "realtime_input_audio_tokens",
        "realtime_input_audio_tokens",
        "token",
        "Realtime model audio input tokens",
    ),
    _agent(
        "realtime_output_audio_tokens",
        "realtime_output_audio_tokens",
        "token",
        "Realtime model audio output tokens",
    ),
    _agent(
        "realtime_input_text_tokens",
        "realtime_input_text_tokens",
        "token",
        "Realtime model text input tokens",
    ),
    _agent(
        "realtime_output_text_tokens",
        "realtime_output_text_tokens",
        "token",
        "Realtime model text output tokens",
    ),
    _agent("agent_session", "session_seconds", "millisecond", "Time an agent was in a room", 1000),
    _agent("video", "video_seconds", "millisecond", "Video an agent watched", 1000),
    _agent("avatar", "avatar_seconds", "millisecond", "Avatar video an agent produced", 1000),
    Meter(
        id="agent_sessions",
        unit="session",
        aggregation="count",
        description="Agent sessions ended (the final usage report of each)",
        sources=(
            Source(type=AgentUsageReported.TYPE, time_field="period_end", where={"final": (True,)}),
        ),
    ),
    Meter(
        id="participant_time",
        unit="millisecond",
        aggregation="duration",
        description="Time people were in a room (from join to leave of each participant, or to "
        "when they were last seen if their leave was never reported)",
        sources=(
            Source(
                type=ParticipantJoined.TYPE,
                key_field="participant_sid",
                start_field="joined_at",
                where={"kind": BILLED_PARTICIPANT_KINDS},
            ),
            # A leave names its join too (when LiveKit sent it), so a lost join still bills.
            Source(
                type=ParticipantLeft.TYPE,
                key_field="participant_sid",
                start_field="joined_at",
                end_field="left_at",
                where={"kind": BILLED_PARTICIPANT_KINDS},
            ),
            # A leave LiveKit's webhook never brought: the stay ends when the reconciliation last
            # saw the participant. A late real leave is never earlier, so, the latest end
            # winning, it replaces this end instead of adding a second stay.
            Source(
                type=ParticipantPresumedGone.TYPE,
                key_field="participant_sid",
                start_field="joined_at",
                end_field="last_seen_at",
                where={"kind": BILLED_PARTICIPANT_KINDS},
            ),
        ),
    ),
    Meter(
        id="egress_time",
        unit="millisecond",
        aggregation="duration",
        description="Time a room was recorded or streamed (from egress start to end)",
        sources=(
            Source(type=EgressStarted.TYPE, key_field="egress_id", start_field="started_at"),
            # An ended egress names its start too, so a lost start event still bills.
            Source(
                type=EgressEnded.TYPE,
                key_field="egress_id",
                start_field="started_at",
                end_field="ended_at",
            ),
        ),
    ),
)

# The event types billing reads: all on the business stream, none on the PHI stream.
METERED_EVENTS: tuple[type[Event], ...] = (
    AgentUsageReported,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantPresumedGone,
    EgressStarted,
    EgressEnded,
)


class Counter(NamedTuple):
    """A ``sum``, ``count`` or ``max`` meter's source, flattened for the metering loop (replays
    run it for every event): ``field`` is empty for ``count``."""

    meter: str
    field: str
    scale: int
    time_field: str
    where: tuple[tuple[str, tuple[Any, ...]], ...]
    is_max: bool


class Reading(NamedTuple):
    """How metering reads one event type's ``sum``, ``count`` and ``max`` meters: ``plain``
    are those with a field and no ``where`` (read all at once by ``values``, which gives a
    tuple in their order), ``others`` the rest."""

    plain: tuple[Counter, ...]
    values: attrgetter[Any] | None
    others: tuple[Counter, ...]


def _reading(pairs: list[tuple[Meter, Source]]) -> Reading:
    counters = [
        Counter(
            meter=meter.id,
            field="" if meter.aggregation == "count" else source.field,
            scale=source.scale,
            time_field=source.time_field,
            where=tuple(source.where.items()),
            is_max=meter.aggregation == "max",
        )
        for meter, source in pairs
        if meter.aggregation != "duration"
    ]
    plain = tuple(c for c in counters if c.field and not c.where)
    fields = [c.field for c in plain]
    # attrgetter of one name gives the value itself, of several a tuple: always ask for two.
    values = attrgetter(*fields, fields[0]) if fields else None
    return Reading(plain, values, tuple(c for c in counters if c not in plain))


class Catalogue:
    """The catalogue indexed for metering: which meters read each event type."""

    def __init__(self, meters: tuple[Meter, ...] = CATALOGUE) -> None:
        self.meters = {meter.id: meter for meter in meters}
        if len(self.meters) != len(meters):
            raise ValueError("a meter id is used twice")
        self.by_type: dict[str, list[tuple[Meter, Source]]] = {}
        for meter in meters:
            for source in meter.sources:
                self.by_type.setdefault(source.type, []).append((meter, source))
        # Per event type, how to read the meters that are not durations.
        self.readings = {event_type: _reading(pairs) for event_type, pairs in self.by_type.items()}
        self.max_meters = sorted(m.id for m in meters if m.aggregation == "max")
        # Event types that open or close intervals (the others need no interval lookup).
        self.interval_types = {
            source.type
            for meter in meters
            if meter.aggregation == "duration"
            for source in meter.sources
        }

    def unit(self, meter: str) -> str:
        found = self.meters.get(meter)
        return found.unit if found else "unknown"

    def is_max(self, meter: str) -> bool:
        found = self.meters.get(meter)
        return found is not None and found.aggregation == "max"


DEFAULT = Catalogue()
