"""Events of recorded consultations made by MediAI's own recorder (``services/recorder``).

The recorder is the egress backend where LiveKit Egress does not run (docs/recording.md): it
publishes the same ``mediai.egress.started``/``ended`` events LiveKit's webhooks do (so the read
model and billing treat both backends alike), and this one when the file is kept.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from shared.events.base import Event
from shared.events.privacy import Plain, Pseudonym


class RecordingStored(Event, frozen=True, kw_only=True):
    """A consultation's recording is kept: an Opus/OGG file encrypted with the patient's
    clinical-record key (``key_id``), so it lives as long as the clinic's retention of medical
    records (``retain_until``) and no longer. ``file`` is its path under the recordings folder
    (``<tenant>/<room>/<egress id>.ogg.sealed``); ``dispatch_id`` is the consultation whose
    consent allowed it and ``patient_ref`` that consultation's patient. ``duration_ms`` is the
    audio in the file; ``ended_by`` says why it ended: ``stopped`` (the API), ``room_ended``,
    ``consent_withdrawn``."""

    TYPE: ClassVar[str] = "mediai.recording.stored.v1"
    PRODUCER: ClassVar[str] = "recorder"
    room: Pseudonym
    egress_id: Plain
    dispatch_id: Plain
    patient_ref: Pseudonym = ""
    file: Pseudonym
    key_id: Plain
    size_bytes: int
    duration_ms: int
    started_at: datetime
    ended_at: datetime
    retain_until: datetime
    ended_by: Plain = "stopped"


EVENTS: tuple[type[Event], ...] = (RecordingStored,)
