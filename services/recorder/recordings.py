"""The recorder's running recordings: it starts and stops them as ``core`` decides, and
announces each on the log (``EgressStarted``, ``RecordingStored``, ``EgressEnded``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from livekit import api as lk
from livekit import rtc

from services.recorder import core, media
from services.recorder.sealed_file import SealedWriter
from shared.bus import Bus
from shared.config import Settings
from shared.events.recordings import RecordingStored
from shared.events.rooms import EgressEnded, EgressStarted
from shared.naming import livekit_room
from shared.phi import KeysUnavailableError

log = logging.getLogger(__name__)

CLINICAL = "clinical"
KIND = "room_composite"
# core's reasons -> the EgressEnded status: a withdrawal aborts (what came before is kept).
STATUS = {core.CONSENT_WITHDRAWN: "aborted", core.CONSENT_REFUSED: "aborted"}


def recording_path(request: core.Request) -> Path:
    """Where a recording is kept, under the recordings folder: one folder per tenant and room."""
    return Path(request.tenant, request.room, f"{request.egress_id}.ogg.sealed")


def recordings_dir(settings: Settings) -> Path:
    return settings.data_dir / "recordings"


@dataclass
class _Running:
    """One recording's task: joined, waiting for consent, then recording until stopped."""

    stop: asyncio.Event
    consent: asyncio.Future[core.Consent]
    reason: str = core.STOPPED


@dataclass
class Recordings:
    bus: Bus
    settings: Settings
    rooms: dict[tuple[str, str], core.RoomState] = field(default_factory=dict)
    running: dict[str, _Running] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def decide(
        self,
        tenant: str,
        room: str,
        change: Callable[[core.RoomState], tuple[core.RoomState, list[core.Action]]],
    ) -> None:
        state, actions = change(self.rooms.get((tenant, room), core.RoomState()))
        self.rooms[(tenant, room)] = state
        for action in actions:
            if isinstance(action, core.Join | core.Start):
                running = self.running.get(action.request.egress_id) or self._spawn(action.request)
                if isinstance(action, core.Start) and not running.consent.done():
                    running.consent.set_result(action.consent)
            elif isinstance(action, core.Stop):
                self._stop(action.egress_id, action.reason)
            elif not self._stop(action.request.egress_id, action.reason):
                await self._ended(action.request, None, status="aborted", error=action.reason)

    async def close(self) -> None:
        """Stop every recording and keep what each recorded (a drain, not a loss)."""
        for running in self.running.values():
            running.stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, request: core.Request) -> _Running:
        running = _Running(asyncio.Event(), asyncio.get_running_loop().create_future())
        self.running[request.egress_id] = running
        task = asyncio.create_task(self._attend(request, running))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return running

    def _stop(self, egress_id: str, reason: str) -> bool:
        running = self.running.get(egress_id)
        if running is not None:
            running.reason = reason
            running.stop.set()
        return running is not None

    async def _attend(self, request: core.Request, running: _Running) -> None:
        """Join, wait for consent (or a stop, or an empty room), record, leave."""
        present = media.HiddenRecorder()
        try:
            await present.join(self.settings.livekit_url, self._token(request))
            consent = await _first(running, present)
            if consent is None:
                reason = running.reason if running.stop.is_set() else core.ROOM_ENDED
                await self._ended(request, None, status="aborted", error=reason)
            else:
                await self._record(request, consent, running, present)
        except (rtc.ConnectError, OSError, KeysUnavailableError) as failure:
            # The room could not be joined, the key service or the disk was away: the egress
            # fails visibly.
            log.warning("recording %s failed: %s", request.egress_id, type(failure).__name__)
            await self._ended(request, None, status="failed", error=type(failure).__name__)
        finally:
            with contextlib.suppress(Exception):
                await present.leave()
            self.running.pop(request.egress_id, None)
            key = (request.tenant, request.room)
            self.rooms[key] = core.ended(self.rooms.get(key, core.RoomState()), request.egress_id)

    async def _record(
        self,
        request: core.Request,
        consent: core.Consent,
        running: _Running,
        present: media.HiddenRecorder,
    ) -> None:
        key = await self.bus.phi.keys.for_sealing(request.tenant, consent.patient_ref, CLINICAL)
        relative = recording_path(request)
        writer = SealedWriter(recordings_dir(self.settings) / relative, key, request.egress_id)
        encoder = media.OpusOgg(writer)  # type: ignore[arg-type]
        started_at = datetime.now(UTC)

        async def started() -> None:
            nonlocal started_at
            started_at = datetime.now(UTC)
            event = EgressStarted(
                room=request.room,
                egress_id=request.egress_id,
                started_at=started_at,
                kind=KIND,
                status="active",
            )
            await self._publish(request, event)

        ended_by = await present.record(encoder, running.stop, started)
        if running.stop.is_set():
            ended_by = running.reason
        encoder.close()
        size = writer.close()
        ended_at = datetime.now(UTC)
        stored = RecordingStored(
            room=request.room,
            egress_id=request.egress_id,
            dispatch_id=consent.dispatch_id,
            patient_ref=consent.patient_ref,
            file=str(relative),
            key_id=key.key_id,
            size_bytes=size,
            duration_ms=encoder.samples * 1000 // media.RATE,
            started_at=started_at,
            ended_at=ended_at,
            retain_until=ended_at + timedelta(seconds=self.settings.clinical_retention),
            ended_by=ended_by,
        )
        await self._publish(request, stored)
        status = STATUS.get(ended_by, "complete")
        error = ended_by if ended_by in STATUS else ""
        await self._ended(request, started_at, status=status, error=error, at=ended_at)

    def _token(self, request: core.Request) -> str:
        """A hidden, subscribe-only participant of kind egress (billed as egress time, not as
        participant time, and shown to nobody)."""
        grants = lk.VideoGrants(
            room_join=True,
            room=livekit_room(request.tenant, request.room),
            hidden=True,
            recorder=True,
            can_subscribe=True,
            can_publish=False,
            can_publish_data=False,
        )
        token = lk.AccessToken(self.settings.livekit_api_key, self.settings.livekit_api_secret)
        return (
            token.with_identity(f"mediai-recorder-{request.egress_id}")
            .with_kind("egress")
            .with_grants(grants)
            .to_jwt()
        )

    async def _ended(
        self,
        request: core.Request,
        started_at: datetime | None,
        *,
        status: str,
        error: str,
        at: datetime | None = None,
    ) -> None:
        ended = EgressEnded(
            room=request.room,
            egress_id=request.egress_id,
            started_at=started_at,
            ended_at=at or datetime.now(UTC),
            status=status,
            kind=KIND,
            error=error,
        )
        await self._publish(request, ended)

    async def _publish(
        self, request: core.Request, event: EgressStarted | EgressEnded | RecordingStored
    ) -> None:
        await self.bus.publish(event, tenant=request.tenant, key=request.room)


async def _first(running: _Running, present: media.HiddenRecorder) -> core.Consent | None:
    """The patient's consent, or None if the recording was stopped or the room emptied first."""
    others: list[asyncio.Future[Any]] = [
        asyncio.ensure_future(running.stop.wait()),
        asyncio.ensure_future(present.empty.wait()),
    ]
    try:
        await asyncio.wait([running.consent, *others], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in others:
            waiting.cancel()
    return running.consent.result() if running.consent.done() else None
