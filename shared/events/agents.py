"""Events of agent dispatches, the worker pool and agent sessions.

A dispatch (key: its ``dispatch_id``) goes requested → dispatched → joined → ended, or → failed
with a reason; the dispatcher's read model is built from these events only. Worker events are
keyed by the pool's worker id and published under ``shared.naming.SYSTEM_TENANT``. What patients and
agents say (transcripts, spoken commands) lives only on the PHI stream.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar

import msgspec

from shared.events.base import PHI_STREAM, Event
from shared.events.privacy import PLAIN, Personal, Plain, Pseudonym

# ---------------------------------------------------------------------------------------------
# Dispatches (published by the dispatcher)


class AgentDispatchRequested(Event, frozen=True, kw_only=True):
    """A clinic asked for an agent of ``role`` in ``room`` (``POST /v1/agents``).

    Models are ``<provider>/<model>`` (``google/gemini-2.5-flash``, ``openai/gpt-4o-mini``);
    ``realtime``, when set, replaces the STT/LLM/TTS pipeline with a speech-to-speech model.
    ``instructions`` are the clinic's prompt for this dispatch; ``instructions_mode`` says
    whether they are appended to the role's template or replace it (when the role allows).
    They often describe the patient ("Paciente de 8 anos, asmático"), so they are personal and
    sealed, here and in the LiveKit job metadata (this event is that metadata); the agent job
    opens them with its dispatch's key. ``participant`` is the identity the agent listens to
    ("" = the role's rule).
    ``avatar`` is the face a speaking role shows: ``"bey"`` (Beyond Presence), ``"tavus"``,
    ``"none"`` (voice only) or ``""`` (the deployment's ``MEDIAI_AGENT_AVATAR``).
    A dispatch that has not joined by ``deadline_at`` fails.

    ``patient_ref`` is the patient the consultation is about: the clinic's pseudonymous id
    (``shared.naming.PATIENT_REF``; never a name, CPF or contact), "" when there is none. The
    agent's events about that patient carry it, so each is found (and its personal data keyed)
    by patient, never by room. ``appointment_id`` is the appointment the consultation belongs
    to, when it came from one (it needs a ``patient_ref``). ``patient_is_minor`` is the clinic's
    word that the patient is under age: consent is then asked of the guardian.
    """

    TYPE: ClassVar[str] = "mediai.agent.dispatch_requested.v1"
    PRODUCER: ClassVar[str] = "dispatcher"
    dispatch_id: Plain
    room: Pseudonym
    role: Plain
    instructions: Personal = ""
    instructions_mode: Plain = "append"
    language: Plain = "pt-BR"
    stt: Plain = ""
    llm: Plain = ""
    tts: Plain = ""
    realtime: Plain = ""
    participant: Pseudonym = ""
    requested_at: datetime
    deadline_at: datetime
    avatar: Plain = ""
    patient_ref: Pseudonym = ""
    appointment_id: Plain = ""
    patient_is_minor: bool = False


class AgentDispatched(Event, frozen=True, kw_only=True):
    """LiveKit accepted the dispatch (``AgentDispatchService.CreateDispatch``); a worker of
    ``agent_name`` will be offered the job."""

    TYPE: ClassVar[str] = "mediai.agent.dispatched.v1"
    PRODUCER: ClassVar[str] = "dispatcher"
    dispatch_id: Plain
    room: Pseudonym
    role: Plain
    livekit_dispatch_id: Plain
    agent_name: Plain
    dispatched_at: datetime


class AgentDispatchFailed(Event, frozen=True, kw_only=True):
    """The dispatch failed and no agent is (or will stay) in the room.

    ``reason`` is a stable code: ``no_worker`` (nobody joined before the deadline),
    ``livekit_unavailable`` (LiveKit refused or did not answer), ``worker_lost`` (the worker
    running the session died), ``over_limit`` (the tenant's usage cap); ``detail`` is one
    human-readable line. A failed dispatch is never retried by itself: the caller dispatches
    again if it still wants an agent.
    """

    TYPE: ClassVar[str] = "mediai.agent.dispatch_failed.v1"
    PRODUCER: ClassVar[str] = "dispatcher"
    dispatch_id: Plain
    room: Pseudonym
    role: Plain
    reason: Plain
    detail: Plain = ""
    failed_at: datetime


class AgentEndRequested(Event, frozen=True, kw_only=True):
    """Someone asked the dispatch's agent to end (``DELETE /v1/agents/{id}``, a draining
    worker, or the dispatcher telling an agent that joined a failed dispatch to leave); the
    agent says goodbye, reports its final usage and leaves. Before an agent joined, it cancels
    the dispatch. The agent follows these by dispatch id (not through a durable consumer)."""

    TYPE: ClassVar[str] = "mediai.agent.end_requested.v1"
    PRODUCER: ClassVar[str] = "dispatcher; agent (a draining worker)"
    dispatch_id: Plain
    room: Pseudonym
    # "api", "worker_draining", ...
    requested_by: Plain = "api"
    requested_at: datetime


class AgentCommandIssued(Event, frozen=True, kw_only=True):
    """A command for a running agent, addressed by dispatch id (``POST /v1/agents/{id}/commands``).

    ``command`` is ``say`` (speak ``text`` now) or ``update_instructions`` (``text`` becomes
    the dispatch's instructions, combined with the role template as at the start). On the PHI
    stream: what an agent is told to say to a patient is part of the conversation.
    ``patient_ref`` is the dispatch's patient ("" when it has none).
    """

    TYPE: ClassVar[str] = "mediai.agent.command_issued.v1"
    PRODUCER: ClassVar[str] = "dispatcher"
    STREAM: ClassVar[str] = PHI_STREAM
    dispatch_id: Plain
    room: Pseudonym
    command: Plain
    text: Personal = ""
    allow_interruptions: bool = True
    issued_at: datetime
    patient_ref: Pseudonym = ""


# ---------------------------------------------------------------------------------------------
# The worker pool (keyed by worker id, tenant "system")


class AgentWorkerStarted(Event, frozen=True, kw_only=True):
    """A worker host's pool (the pool service) started an agent worker process.

    ``reason``: ``minimum`` (keeping the pool at its minimum), ``scale_up`` (every worker was
    loaded above the threshold) or ``restart`` (replacing one that died; ``attempt`` counts
    consecutive restarts of that slot).
    """

    TYPE: ClassVar[str] = "mediai.agent.worker_started.v1"
    PRODUCER: ClassVar[str] = "pool"
    worker_id: Plain
    pid: int
    reason: Plain
    attempt: int = 0
    started_at: datetime


class AgentWorkerExited(Event, frozen=True, kw_only=True):
    """An agent worker process ended. ``expected`` is true when the pool stopped it (drain,
    scale down); otherwise it died (``signal`` set when killed by one) and, unless the pool is
    stopping, it is restarted after ``restart_delay_seconds``. Sessions it was running fail
    with ``worker_lost``."""

    TYPE: ClassVar[str] = "mediai.agent.worker_exited.v1"
    PRODUCER: ClassVar[str] = "pool"
    worker_id: Plain
    pid: int
    exit_code: int | None = None
    signal: int | None = None
    expected: bool = False
    uptime_seconds: float = 0.0
    restart_delay_seconds: float | None = None
    exited_at: datetime


class AgentWorkerRegistered(Event, frozen=True, kw_only=True):
    """An agent worker registered with LiveKit and can take jobs.

    ``providers_missing`` maps a provider the worker cannot use to the setting it lacks
    (e.g. ``{"google": "GOOGLE_API_KEY is not set"}``): jobs asking for it fail at once.
    """

    TYPE: ClassVar[str] = "mediai.agent.worker_registered.v1"
    PRODUCER: ClassVar[str] = "agent"
    worker_id: Plain
    livekit_worker_id: Plain
    pid: int
    agent_name: Plain
    roles: list[Plain] = msgspec.field(default_factory=list)
    providers_missing: Annotated[dict[str, str], PLAIN] = msgspec.field(default_factory=dict)
    registered_at: datetime


class AgentWorkerLoadReported(Event, frozen=True, kw_only=True):
    """An agent worker's load: the jobs it runs (or is accepting) out of the most it takes
    (``MEDIAI_AGENT_JOBS_PER_WORKER``), the count its load function gives LiveKit. Published
    when it registers, whenever the count or ``available`` changes, and at least every
    ``next_report_seconds``; ``available`` is false while it drains. The dispatcher sums these
    over every worker of every host to refuse a dispatch at once when none has room, and
    forgets a worker silent for three periods (a host that vanished). A worker that also beats
    on core NATS (``shared.subjects.worker_heartbeat``, not stored) says how often in
    ``heartbeat_seconds``: then three missed beats are enough (0: it does not beat).
    """

    TYPE: ClassVar[str] = "mediai.agent.worker_load_reported.v1"
    PRODUCER: ClassVar[str] = "agent"
    worker_id: Plain
    active_jobs: int
    max_jobs: int
    available: bool = True
    next_report_seconds: float = 30.0
    reported_at: datetime
    heartbeat_seconds: float = 0.0


# ---------------------------------------------------------------------------------------------
# Agent sessions (published by the agent worker; keyed by dispatch id)


class AgentSessionStarted(Event, frozen=True, kw_only=True):
    """The agent joined the room and its session is running (the dispatch is ``joined``)."""

    TYPE: ClassVar[str] = "mediai.agent.session_started.v1"
    PRODUCER: ClassVar[str] = "agent"
    dispatch_id: Plain
    room: Pseudonym
    role: Plain
    worker_id: Plain = ""
    job_id: Plain = ""
    agent_identity: Pseudonym = ""
    language: Plain = "pt-BR"
    stt: Plain = ""
    llm: Plain = ""
    tts: Plain = ""
    realtime: Plain = ""
    started_at: datetime


class AgentSessionFailed(Event, frozen=True, kw_only=True):
    """The agent could not run the job: the metadata was invalid (``invalid_metadata``), the
    provider has no credentials (``missing_credentials``), the role or model is unknown
    (``unknown_role``, ``unknown_model``), the dispatch's data keys could not be had
    (``keys_unavailable``: the key service is away, or the dispatch is no longer live) or
    starting the session failed (``start_failed``).
    The job ends at once; no half-configured agent stays in the room."""

    TYPE: ClassVar[str] = "mediai.agent.session_failed.v1"
    PRODUCER: ClassVar[str] = "agent"
    dispatch_id: Plain
    room: Pseudonym = ""
    role: Plain = ""
    reason: Plain
    detail: Plain = ""
    worker_id: Plain = ""
    failed_at: datetime


class AgentSessionEnded(Event, frozen=True, kw_only=True):
    """The agent left the room. ``reason``: ``end_requested``, ``worker_draining``,
    ``room_empty`` (the last person left, or nobody came), ``completed`` (the agent ended the
    conversation), ``room_closed`` (the room was deleted), ``job_shutdown`` (LiveKit ended the
    job) or ``error`` (then the dispatch counts as failed and ``detail`` says why)."""

    TYPE: ClassVar[str] = "mediai.agent.session_ended.v1"
    PRODUCER: ClassVar[str] = "agent"
    dispatch_id: Plain
    room: Pseudonym
    role: Plain
    reason: Plain
    detail: Plain = ""
    worker_id: Plain = ""
    duration_seconds: float = 0.0
    ended_at: datetime


class AgentStateChanged(Event, frozen=True, kw_only=True):
    """A state of the session worth keeping: ``ready`` (listening for the first time),
    ``user_away`` / ``user_back``, ``error`` (a provider error; ``detail`` says which, the
    session may recover) and ``ending``. The per-turn listening/thinking/speaking cycle is not
    published."""

    TYPE: ClassVar[str] = "mediai.agent.state_changed.v1"
    PRODUCER: ClassVar[str] = "agent"
    dispatch_id: Plain
    room: Pseudonym
    role: Plain
    state: Plain
    detail: Plain = ""
    changed_at: datetime


class AgentTranscribed(Event, frozen=True, kw_only=True):
    """One final transcript segment: what a participant said (``speaker`` ``user``) or what
    the agent said (``speaker`` ``agent``; ``interrupted`` when cut off). Personal health
    data: PHI stream only, never logged. ``segment_id`` is what clinical records cite.
    ``patient_ref`` is the dispatch's patient, whoever spoke ("" when the dispatch named none):
    the whole conversation is about that patient."""

    TYPE: ClassVar[str] = "mediai.agent.transcribed.v1"
    PRODUCER: ClassVar[str] = "agent"
    STREAM: ClassVar[str] = PHI_STREAM
    dispatch_id: Plain
    room: Pseudonym
    role: Plain
    segment_id: Plain
    speaker: Plain
    participant_identity: Pseudonym = ""
    text: Personal
    language: Plain = ""
    interrupted: bool = False
    spoken_at: datetime
    patient_ref: Pseudonym = ""


class AgentUsageReported(Event, frozen=True, kw_only=True):
    """What an agent session used during ``[period_start, period_end)``: deltas, not totals.

    Published every period while the session runs and once more (``final``) at its end, so a
    crash loses at most one period. Billing sums these; each report counts once (by event id).
    ``sequence`` numbers the reports of one dispatch from 1; ``provider``, ``stt_model`` and
    ``tts_model`` name what was used (``llm_model`` is the LLM or realtime model).
    """

    TYPE: ClassVar[str] = "mediai.agent.usage_reported.v1"
    PRODUCER: ClassVar[str] = "agent"
    dispatch_id: Plain
    room: Pseudonym
    role: Plain
    period_start: datetime
    period_end: datetime
    final: bool = False
    llm_model: Plain = ""
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
    sequence: int = 0
    provider: Plain = ""
    stt_model: Plain = ""
    tts_model: Plain = ""


class AgentToolCalled(Event, frozen=True, kw_only=True):
    """The agent's model called one of its role's tools (``search_doctors``,
    ``book_appointment``, ``record_answer``…) and the tool returned: ``ok`` false when it
    failed (a ``ToolError`` the model was told about). ``duration_seconds`` is from the call to
    its result. Neither arguments nor results are here (they may be personal: a name, a
    symptom); what a tool did is in its own events (``AppointmentBooked``, ``ConsentGiven``).
    The session timeline shows one entry per call."""

    TYPE: ClassVar[str] = "mediai.agent.tool_called.v1"
    PRODUCER: ClassVar[str] = "agent"
    dispatch_id: Plain
    room: Pseudonym
    role: Plain
    call_id: Plain
    tool: Plain
    ok: bool = True
    duration_seconds: float = 0.0
    called_at: datetime


EVENTS: tuple[type[Event], ...] = (
    AgentDispatchRequested,
    AgentDispatched,
    AgentDispatchFailed,
    AgentEndRequested,
    AgentCommandIssued,
    AgentWorkerStarted,
    AgentWorkerExited,
    AgentWorkerRegistered,
    AgentWorkerLoadReported,
    AgentSessionStarted,
    AgentSessionFailed,
    AgentSessionEnded,
    AgentStateChanged,
    AgentTranscribed,
    AgentUsageReported,
    AgentToolCalled,
)
