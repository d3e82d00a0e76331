"""One dispatch's session: built from its job metadata, run, metered, commanded, ended well."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from livekit import rtc
from livekit.agents import NOT_GIVEN, Agent, AgentSession, AutoSubscribe, JobContext
from livekit.agents.llm import ChatMessage
from livekit.agents.voice import room_io

from services.agent.commands import CommandListener
from services.agent.medical import Medical
from services.agent.metadata import JobMetadata, split_model
from services.agent.presence import ParticipantsTextOutput, Presence
from services.agent.providers import Models
from services.agent.reporter import Reporter
from services.agent.roles import Role, render_instructions
from services.agent.spool import Journal, spool_root
from services.agent.tooluse import tool_calls
from services.agent.tracing import JobTrace
from services.agent.usage import UsageMeter, totals_from_model_usage
from services.agent.utterances import UtteranceSTT
from shared.bus import Bus
from shared.config import Settings
from shared.events.agents import (
    AgentCommandIssued,
    AgentEndRequested,
    AgentSessionEnded,
    AgentSessionStarted,
    AgentStateChanged,
    AgentTranscribed,
)

log = logging.getLogger(__name__)

# Reasons for which the agent says the role's goodbye before leaving (someone is listening).
GOODBYE_REASONS = ("end_requested", "worker_draining")
GOODBYE_TIMEOUT = 15.0
# livekit-agents' shutdown reasons, for a session that ends without our own reason.
FRAMEWORK_REASONS = {"room disconnected": "room_closed", "job crashed": "error"}
# The rate the session hears the room at (STT pipeline): Silero's VAD and Gemini's STT work at
# 16 kHz (their models take nothing more), so the room's audio is resampled once,
# in livekit-rtc's native code, instead of to livekit-agents' 24 kHz and then again, in every
# VAD stream and in the STT stream, on every frame.
HEARING_RATE = 16_000
# The room's audio reaches the session in 100 ms frames (livekit-agents' default is 50): every
# frame costs a native event to the loop and a hop through half a dozen asyncio channels
# (room input, session, VAD, STT) on the job's event loop, so this halves that work. The VAD still
# infers every 32 ms window; it only learns of the last ones up to 50 ms later.
HEARING_FRAME_MS = 100


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class WorkerContext:
    """What a job process prepared once (in prewarm) and every session uses."""

    settings: Settings
    roles: dict[str, Role]
    vad: Any
    worker_id: str
    openai_client: Any = None


def open_journal(deps: WorkerContext, dispatch_id: str) -> Journal:
    """The spool journal of one of this worker's sessions (services/agent/spool.py)."""
    settings = deps.settings
    return Journal.create(
        spool_root(settings.data_dir),
        deps.worker_id,
        dispatch_id,
        max_bytes=settings.agent_spool_max_bytes,
    )


class VideoClock:
    """Seconds during which at least one remote video track was subscribed (video metering)."""

    def __init__(self) -> None:
        self._tracks: set[str] = set()
        self._since: float | None = None
        self._seconds = 0.0

    def subscribed(self, track: rtc.Track) -> None:
        if track.kind == rtc.TrackKind.KIND_VIDEO:
            if not self._tracks:
                self._since = time.monotonic()
            self._tracks.add(track.sid)

    def unsubscribed(self, track: rtc.Track) -> None:
        self._tracks.discard(track.sid)
        if not self._tracks and self._since is not None:
            self._seconds += time.monotonic() - self._since
            self._since = None

    @property
    def seconds(self) -> float:
        running = time.monotonic() - self._since if self._since is not None else 0.0
        return self._seconds + running


class SessionRuntime:
    """Runs one AgentSession for one dispatch; tools see it as ``context.userdata``."""

    def __init__(
        self,
        ctx: JobContext,
        meta: JobMetadata,
        role: Role,
        deps: WorkerContext,
        models: Models,
        bus: Bus,
        job_trace: JobTrace | None = None,
    ) -> None:
        self.ctx, self.meta, self.role, self.deps, self.models = ctx, meta, role, deps, models
        self.job_trace = job_trace
        self.request = meta.request
        self.reporter = Reporter(
            bus,
            open_journal(deps, meta.dispatch_id),
            tenant=meta.tenant,
            key=meta.dispatch_id,
            traceparent=meta.traceparent,
        )
        self.bus = bus
        self.video = VideoClock()
        self.end: tuple[str, str] | None = None
        self.started_monotonic = time.monotonic()
        self._ready = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._commands: CommandListener | None = None
        self.text_output: ParticipantsTextOutput | None = None
        provider = split_model(meta.models[0])[0]
        self.meter = UsageMeter(
            dispatch_id=meta.dispatch_id,
            room=self.request.room,
            role=role.name,
            started_at=utcnow(),
            provider=provider,
            llm_model=self.request.realtime or self.request.llm,
            stt_model="" if self.request.realtime else self.request.stt,
            tts_model="" if self.request.realtime or not role.speaks else self.request.tts,
        )
        self.presence = Presence(
            ctx.room,
            participant=self.request.participant,
            listens_to=role.listens_to,
            empty_timeout=deps.settings.agent_empty_room_timeout,
            on_empty=lambda reason: self.finish_soon(reason),
        )
        stt = session_stt(models.stt)
        self.session: AgentSession[SessionRuntime] = AgentSession(
            stt=stt if stt is not None else NOT_GIVEN,
            llm=models.llm,
            tts=models.tts if models.tts is not None else NOT_GIVEN,
            vad=deps.vad,
            turn_handling={
                "turn_detection": "realtime_llm" if models.realtime else "vad",
                "interruption": {"enabled": True, "mode": "vad"},
            },
            userdata=self,
        )
        if isinstance(stt, UtteranceSTT):  # its utterances begin when the session's VAD says so
            self.session.on("user_state_changed", stt.on_user_state)
        # The medical roles' behaviour (consent first, tools, copilot, vision, avatar): issue 5.
        self.medical = Medical(self)
        self.consultation = self.medical.consultation  # what the medical tools reach
        self.agent: Agent = self.medical.agent(self.instructions(self.request.instructions))

    def instructions(self, text: str) -> str:
        return render_instructions(
            self.role,
            language=self.request.language,
            instructions=text,
            mode=self.request.instructions_mode,
        )

    def _ids(self) -> dict[str, str]:
        return {
            "dispatch_id": self.meta.dispatch_id,
            "room": self.request.room,
            "role": self.role.name,
        }

    # -- start -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the session in the (connected) room; the dispatch is joined from here."""
        session = self.session
        self.reporter.emit(
            AgentSessionStarted(
                **self._ids(),
                worker_id=self.deps.worker_id,
                job_id=self.ctx.job.id,
                agent_identity=self.ctx.room.local_participant.identity,
                language=self.request.language,
                stt=self.meter_models("stt"),
                llm=self.request.llm if not self.request.realtime else "",
                tts=self.meter_models("tts"),
                realtime=self.request.realtime,
                started_at=utcnow(),
            )
        )
        session.on("conversation_item_added", self._on_item)
        session.on("agent_state_changed", self._on_agent_state)
        session.on("user_state_changed", self._on_user_state)
        session.on("error", self._on_error)
        session.on("function_tools_executed", self._on_tools)
        session.on("close", self._on_close)
        self.ctx.room.on("track_subscribed", lambda track, *_: self.video.subscribed(track))
        self.ctx.room.on("track_unsubscribed", lambda track, *_: self.video.unsubscribed(track))
        await self.medical.before_start()  # an avatar takes the audio output before the session
        hears = self.medical.room_options()
        await session.start(
            self.agent,
            room=self.ctx.room,
            room_options=room_io.RoomOptions(
                audio_output=self.role.speaks,
                text_output=self.role.speaks,
                audio_input=audio_input(hears["audio_input"], realtime=self.models.realtime),
                video_input=hears["video_input"],
                participant_identity=self.presence.initial_identity(),
                close_on_disconnect=False,
            ),
            record=False,
            # No session host: livekit-agents' would stream every conversation item, state and
            # usage update to everyone in the room (the patient would get a copilot's hints) and
            # let any participant drive the session; it was also 2–7 % of a job's event loop.
            session_host=False,
        )
        if not self.role.speaks:
            self.text_output = ParticipantsTextOutput(
                self.ctx.room,
                topic=self.role.text_topic,
                recipients=lambda: self.presence.humans(self.role.text_to),
            )
            session.output.transcription = self.text_output
        self.presence.attach(session.room_io)
        self.medical.started()
        self.ctx.add_shutdown_callback(self._on_shutdown)
        self._spawn(self._report_usage_forever(), "mediai-usage")
        self._commands = await CommandListener.start(
            self.bus,
            tenant=self.meta.tenant,
            dispatch_id=self.meta.dispatch_id,
            on_end=self._on_end_requested,
            on_command=self._on_command,
        )
        if self.role.greeting and self.role.speaks:
            self._spawn(self._greet(), "mediai-greeting")

    async def _greet(self) -> None:
        # Once someone is linked and the agent's audio track is up: not into an empty room.
        await self.session.room_io.wait_for_ready()
        self.session.say(self.role.greeting)

    def meter_models(self, kind: str) -> str:
        if self.request.realtime or (kind == "tts" and not self.role.speaks):
            return ""
        return str(getattr(self.request, kind))

    def _spawn(self, coroutine: Any, name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- what happens in the session ------------------------------------------------------

    def _on_item(self, event: Any) -> None:
        item = event.item
        if not isinstance(item, ChatMessage) or item.role not in ("user", "assistant"):
            return
        text = item.text_content
        if not text:
            return
        if item.role == "user":
            linked = self.session.room_io.linked_participant
            speaker, identity = "user", linked.identity if linked else ""
        else:
            speaker, identity = "agent", self.ctx.room.local_participant.identity
        self.reporter.emit(
            AgentTranscribed(
                **self._ids(),
                segment_id=item.id,
                speaker=speaker,
                participant_identity=identity,
                text=text,
                language=self.request.language,
                interrupted=item.interrupted,
                spoken_at=datetime.fromtimestamp(item.created_at, UTC),
                patient_ref=self.request.patient_ref,
            )
        )

    def _on_tools(self, event: Any) -> None:
        for called in tool_calls(event, **self._ids()):
            self.reporter.emit(called)

    def _state(self, state: str, detail: str = "") -> None:
        self.reporter.emit(
            AgentStateChanged(**self._ids(), state=state, detail=detail, changed_at=utcnow())
        )

    def _on_agent_state(self, event: Any) -> None:
        if event.new_state == "listening" and not self._ready:
            self._ready = True
            self._state("ready")

    def _on_user_state(self, event: Any) -> None:
        if event.new_state == "away":
            self._state("user_away")
        elif event.old_state == "away":
            self._state("user_back")

    def _on_error(self, event: Any) -> None:
        # Class names and model names only: provider messages may quote what was said.
        error = getattr(event.error, "error", event.error)
        model = getattr(event.source, "model", type(event.source).__name__)
        self._state("error", f"{model}: {type(error).__name__}")

    def _on_close(self, event: Any) -> None:
        if getattr(event.reason, "value", event.reason) == "error":
            error = getattr(event.error, "error", event.error)
            self.finish_soon("error", f"the session closed after {type(error).__name__}")

    async def _report_usage_forever(self) -> None:
        period = self.deps.settings.agent_usage_period
        while True:
            await asyncio.sleep(period)
            self.reporter.emit(self.meter.report(self._totals(), utcnow()))

    def _totals(self) -> Any:
        return totals_from_model_usage(
            self.session.usage.model_usage,
            video_seconds=self.video.seconds,
            avatar_seconds=self.consultation.avatar_seconds(),
        )

    # -- commands --------------------------------------------------------------------------

    async def _on_end_requested(self, event: AgentEndRequested) -> None:
        reason = "worker_draining" if event.requested_by == "worker_draining" else "end_requested"
        self.finish_soon(reason)

    async def _on_command(self, command: AgentCommandIssued) -> None:
        if command.command == "say":
            self.say(command.text, allow_interruptions=command.allow_interruptions)
        elif command.command == "update_instructions":
            await self.agent.update_instructions(self.instructions(command.text))
        else:
            log.warning("unknown agent command %r ignored", command.command)

    def say(self, text: str, *, allow_interruptions: bool = True) -> None:
        """Speak to the room, or, for a text-only role, send the text to its readers."""
        if self.text_output is not None:
            self.text_output.send(text)
        else:
            self.session.say(text, allow_interruptions=allow_interruptions)

    # -- ending ----------------------------------------------------------------------------

    def finish_soon(self, reason: str, detail: str = "") -> None:
        """End the session gracefully (goodbye when someone listens), once; reason is kept."""
        if self.end is not None:
            return
        self.end = (reason, detail)
        self._spawn(self._finish(reason), "mediai-finish")

    async def _finish(self, reason: str) -> None:
        self._state("ending", reason)
        try:
            await asyncio.wait_for(self._last_words(reason), GOODBYE_TIMEOUT)
        except (TimeoutError, RuntimeError) as error:
            log.warning("goodbye not completed: %s", type(error).__name__)
        self.ctx.shutdown(reason)

    async def _last_words(self, reason: str) -> None:
        if reason == "completed" and self.session.current_speech is not None:
            await self.session.current_speech.wait_for_playout()
        if reason not in GOODBYE_REASONS or not self.role.goodbye or not self.presence.humans():
            return
        if self.text_output is not None:
            self.text_output.send(self.role.goodbye)
            return
        await self.session.interrupt(force=True)
        await self.session.say(self.role.goodbye, allow_interruptions=False).wait_for_playout()

    async def _on_shutdown(self, framework_reason: str) -> None:
        reason, detail = self.end or (FRAMEWORK_REASONS.get(framework_reason, "job_shutdown"), "")
        for task in list(self._tasks):
            if task.get_name() != "mediai-finish":
                task.cancel()
        self.presence.detach()
        if self._commands is not None:
            await self._commands.close()
        await self.medical.closing()  # e.g. an unfinished anamnesis, before the reporter closes
        now = utcnow()
        self.reporter.emit(self.meter.report(self._totals(), now, final=True))
        self.reporter.emit(
            AgentSessionEnded(
                **self._ids(),
                reason=reason,
                detail=detail,
                worker_id=self.deps.worker_id,
                duration_seconds=round(time.monotonic() - self.started_monotonic, 3),
                ended_at=now,
            )
        )
        await self.reporter.close()
        await self.bus.close()
        if self.job_trace is not None:  # last: the spans of the final events are in it
            await self.job_trace.end(reason)


def session_stt(stt: Any) -> Any:
    """The STT the session runs: a non-streaming one (OpenAI's) transcribes the utterances the
    session's VAD cuts (services/agent/utterances.py), not through livekit-agents' StreamAdapter,
    which would run a second VAD stream over the same audio."""
    if stt is None or stt.capabilities.streaming:
        return stt
    return UtteranceSTT(stt)


def audio_input(hears: bool, *, realtime: bool) -> room_io.AudioInputOptions | bool:
    """What the session hears: nothing, the room at ``HEARING_RATE`` (STT and VAD), or, for a
    realtime model, livekit-agents' default (each realtime plugin takes its own rate)."""
    if not hears or realtime:
        return hears
    return room_io.AudioInputOptions(sample_rate=HEARING_RATE, frame_size_ms=HEARING_FRAME_MS)


def auto_subscribe(role: Role, settings: Settings | None = None) -> AutoSubscribe:
    """Video costs bandwidth and is metered: only roles that look at cameras subscribe to it,
    and (with ``settings``) only in streaming mode: on demand, vision.py subscribes a camera just
    for the frame it takes."""
    if settings is not None and not (settings.enable_vision and settings.enable_vision_streaming):
        return AutoSubscribe.AUDIO_ONLY
    return AutoSubscribe.SUBSCRIBE_ALL if role.vision else AutoSubscribe.AUDIO_ONLY
