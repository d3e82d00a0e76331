"""When the recorder records a room, free of I/O: a request from the API and the patient's
consent, each in order, decide when a recording starts and why it ends.

A request waits for consent: a ``ConsentGiven`` with ``recording`` true, in the same room, given
after the request (the patient was told the conversation is recorded only once it was asked to
be), whichever of the two events reaches the recorder first.
A refusal (a ``ConsentRefused`` about the recording) before the start cancels the request; after
it, it is a withdrawal and ends the recording. A stop request ends either.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from shared.events.clinical import ConsentGiven, ConsentRefused

# Why a recording (or a request waiting for consent) ended: the RecordingStored ``ended_by``.
STOPPED, ROOM_ENDED, CONSENT_WITHDRAWN, CONSENT_REFUSED = (
    "stopped",
    "room_ended",
    "consent_withdrawn",
    "consent_refused",
)


@dataclass(frozen=True)
class Request:
    """A tenant asked to record a room (``EgressRequested`` with backend ``recorder``)."""

    egress_id: str
    tenant: str
    room: str
    requested_at: datetime


@dataclass(frozen=True)
class Consent:
    """Whose consent allowed a recording: the consultation and its patient."""

    dispatch_id: str
    patient_ref: str
    given_at: datetime


@dataclass(frozen=True)
class Join:
    """Join the room hidden, listening to nothing: LiveKit then shows it as recorded, so the
    agent asks the patient's consent to the recording."""

    request: Request


@dataclass(frozen=True)
class Start:
    """Start recording (joining first if not joined yet)."""

    request: Request
    consent: Consent


@dataclass(frozen=True)
class Stop:
    """End the recording ``egress_id`` (keeping what was recorded)."""

    egress_id: str
    reason: str


@dataclass(frozen=True)
class Cancel:
    """End a request that never started (``EgressEnded`` aborted, no file)."""

    request: Request
    reason: str


Action = Join | Start | Stop | Cancel


@dataclass(frozen=True)
class RoomState:
    """One room's request waiting for consent, or its recording running (by egress id), and
    the room's latest consent decisions about recording: consent and the request travel by
    different paths (the agent publishes at once, the API through its outbox), so either may
    reach the recorder first."""

    waiting: Request | None = None
    recording: str | None = None
    consent: Consent | None = None
    refused_at: datetime | None = None


def _refused_since(state: RoomState, at: datetime) -> bool:
    refused = state.refused_at
    consent = state.consent
    return refused is not None and refused >= at and (consent is None or refused > consent.given_at)


def requested(state: RoomState, request: Request) -> tuple[RoomState, list[Action]]:
    if state.waiting is not None or state.recording is not None:
        # One recording per room: a second request ends at once, aborted.
        return state, [Cancel(request, "already_recording")]
    if _refused_since(state, request.requested_at):
        return state, [Cancel(request, CONSENT_REFUSED)]
    consent = state.consent
    if consent is not None and consent.given_at >= request.requested_at:
        return replace(state, recording=request.egress_id), [Start(request, consent)]
    return replace(state, waiting=request), [Join(request)]


def consent_given(state: RoomState, event: ConsentGiven) -> tuple[RoomState, list[Action]]:
    if not event.recording:
        return state, []
    consent = Consent(event.dispatch_id, event.patient_ref, event.given_at)
    state = replace(state, consent=consent)
    waiting = state.waiting
    if waiting is None or event.given_at < waiting.requested_at:
        return state, []
    return replace(state, waiting=None, recording=waiting.egress_id), [Start(waiting, consent)]


def refuses_recording(event: ConsentRefused) -> bool:
    """A refusal that covers the recording: of the recording itself, or of everything when the
    question included the recording."""
    return event.refused == "recording" or event.recording


def consent_refused(state: RoomState, event: ConsentRefused) -> tuple[RoomState, list[Action]]:
    if not refuses_recording(event):
        return state, []
    state = replace(state, refused_at=event.refused_at)
    if state.recording is not None:
        return replace(state, recording=None), [Stop(state.recording, CONSENT_WITHDRAWN)]
    if state.waiting is not None and event.refused_at >= state.waiting.requested_at:
        return replace(state, waiting=None), [Cancel(state.waiting, CONSENT_REFUSED)]
    return state, []


def stop_requested(state: RoomState, egress_id: str) -> tuple[RoomState, list[Action]]:
    if state.recording == egress_id:
        return replace(state, recording=None), [Stop(egress_id, STOPPED)]
    if state.waiting is not None and state.waiting.egress_id == egress_id:
        return replace(state, waiting=None), [Cancel(state.waiting, STOPPED)]
    return state, []


def ended(state: RoomState, egress_id: str) -> RoomState:
    """The recording (or the request waiting in the room) ended by itself, the room closed:
    the room is free again."""
    if state.recording == egress_id:
        return replace(state, recording=None)
    if state.waiting is not None and state.waiting.egress_id == egress_id:
        return replace(state, waiting=None)
    return state
