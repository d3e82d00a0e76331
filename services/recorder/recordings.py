"""The recorder's running recordings: it starts and stops them as ``core`` decides, and
announces each on the log (``EgressStarted``, ``RecordingStored``, ``EgressEnded``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

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
    stop: asyncio.Event
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
            if isinstance(action, core.Start):
                running = self.running[action.request.egress_id] = _Running(asyncio.Event())
                task = asyncio.create_task(self._record(action, running))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            elif isinstance(action, core.Stop):
                stopping = self.running.get(action.egress_id)
                if stopping is not None:
                    stopping.reason = action.reason
                    stopping.stop.set()
            else:
                await self._ended(action.request, None, status="aborted", error=action.reason)

    async def close(self) -> None:
        """Stop every recording and keep what each recorded (a drain, not a loss)."""
        for running in self.running.values():
            running.stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _record(self, start: core.Start, running: _Running) -> None:
        request, consent = start.request, start.consent
        began = False
        try:
            key = await self.bus.phi.keys.for_sealing(request.tenant, consent.patient_ref, CLINICAL)
            relative = recording_path(request)
            writer = SealedWriter(recordings_dir(self.settings) / relative, key, request.egress_id)
            encoder = media.OpusOgg(writer)  # type: ignore[arg-type]
            started_at = datetime.now(UTC)

            async def started() -> None:
                nonlocal started_at, began
                started_at, began = datetime.now(UTC), True
                event = EgressStarted(
                    room=request.room,
                    egress_id=request.egress_id,
                    started_at=started_at,
                    kind=KIND,
                    status="active",
                )
                await self._publish(request, event)

            ended_by = await media.record(
                self.settings.livekit_url, self._token(request), encoder, running.stop, started
            )
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
            error = ended_by if ended_by in STATUS else ""
            status = STATUS.get(ended_by, "complete")
            await self._ended(request, started_at, status=status, error=error, at=ended_at)
        except (rtc.ConnectError, OSError, KeysUnavailableError) as failure:
            # The room could not be joined, the key service or the disk was away: the egress
            # fails visibly; a file that never received audio is not kept.
            log.warning("recording %s failed: %s", request.egress_id, type(failure).__name__)
            if not began:
                (recordings_dir(self.settings) / recording_path(request)).unlink(missing_ok=True)
            await self._ended(request, None, status="failed", error=type(failure).__name__)
        finally:
            self.running.pop(request.egress_id, None)
            key_ = (request.tenant, request.room)
            self.rooms[key_] = core.ended(self.rooms.get(key_, core.RoomState()), request.egress_id)

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
