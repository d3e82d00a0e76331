"""The dispatcher's decisions and its read model, free of I/O: ``decide`` a request into an
event, ``evolve`` a dispatch's state by each event of the log."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

import msgspec

from services.dispatcher.catalog import AVATARS, SHIPPED_ROLES, Catalog
from shared.contract import documented
from shared.events import Envelope
from shared.events.agents import (
    AgentDispatched,
    AgentDispatchFailed,
    AgentDispatchRequested,
    AgentEndRequested,
    AgentSessionEnded,
    AgentSessionFailed,
    AgentSessionStarted,
)
from shared.events.billing import UsageLimitCleared, UsageLimitReached
from shared.naming import Identity, Language, PatientRef, RoomName, whole

AppointmentId = Annotated[
    str,
    msgspec.Meta(
        pattern=whole(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"),
        description="the id of one of the clinic's appointments (POST /v1/appointments)",
    ),
]

OPEN = ("requested", "dispatched")
TERMINAL = ("ended", "failed")


class DispatchAgentRequest(
    msgspec.Struct, frozen=True, kw_only=True, rename="camel", forbid_unknown_fields=True
):
    """The spec's DispatchAgentRequest, plus ``role``, ``realtime``, ``instructionsMode``,
    ``participant``, ``avatar`` and the patient (``patientRef``, ``appointmentId``,
    ``patientIsMinor``). Models are ``<provider>/<model>`` or a bare model name;
    omitted ones get the deployment's defaults. ``realtime`` (a model, or ``"default"``)
    replaces stt/llm/tts with one speech-to-speech model. ``avatar`` is ``"none"``, ``"bey"``
    or ``"tavus"``; omitted, the deployment's ``MEDIAI_AGENT_AVATAR``.

    ``patientRef`` is the patient the consultation is about (the clinic's pseudonymous id,
    never a name, CPF or contact): the agent's records and events about the patient carry it.
    ``appointmentId`` is the appointment the consultation belongs to; it needs ``patientRef``
    (the appointment's patient), and the anamnesis is then also found by the appointment.
    ``patientIsMinor``: consent is asked of the patient's guardian."""

    room: RoomName
    role: Annotated[str, msgspec.Meta(extra_json_schema=documented(enum=list(SHIPPED_ROLES)))] = (
        "generic"
    )
    instructions: Annotated[str, msgspec.Meta(max_length=20_000)] = ""
    instructions_mode: Literal["append", "replace"] = "append"
    stt: str | None = None
    llm: str | None = None
    tts: str | None = None
    realtime: str | None = None
    language: Language = "pt-BR"
    participant: Identity | None = None
    # A plain string, not a Literal: an unknown value gets our own 400 listing the valid ones.
    avatar: (
        Annotated[str, msgspec.Meta(extra_json_schema=documented(enum=list(AVATARS)))] | None
    ) = None
    patient_ref: PatientRef | None = None
    appointment_id: AppointmentId | None = None
    patient_is_minor: bool = False


class DispatchRejectedError(Exception):
    """The request cannot be dispatched: an HTTP status, a stable code and the valid choices."""

    def __init__(
        self,
        message: str,
        *,
        code: str,
        status: int = 400,
        details: list[dict[str, object]] | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.status, self.details = code, status, details


class UsageLimit(msgspec.Struct, frozen=True, kw_only=True):
    """Billing's last word on one (tenant, meter, billing month) at the 100% threshold (a row of
    ``dispatch_usage_limits``): ``in_force`` from a ``UsageLimitReached``, lifted by a
    ``UsageLimitCleared``; ``revision`` orders them."""

    tenant_id: str
    meter: str
    period_start: datetime
    period_end: datetime
    in_force: bool
    revision: int
    monthly_quantity: int | None = None
    quantity: int = 0


def limit_notice(event: Envelope) -> UsageLimit | None:
    """What a billing limit event says about dispatching; None for 80% (a warning for people,
    not a reason to refuse)."""
    data = event.data
    if not isinstance(data, UsageLimitReached | UsageLimitCleared) or data.threshold_percent != 100:
        return None
    return UsageLimit(
        tenant_id=event.tenant,
        meter=data.meter,
        period_start=data.period_start,
        period_end=data.period_end,
        in_force=isinstance(data, UsageLimitReached),
        revision=data.revision,
        monthly_quantity=data.monthly_quantity,
        quantity=data.quantity,
    )


def evolve_limit(current: UsageLimit | None, notice: UsageLimit) -> UsageLimit:
    """The higher revision wins, whatever the delivery order (an equal one is the same change
    told again)."""
    if current is not None and current.revision >= notice.revision:
        return current
    return notice


def blocking_limits(limits: Iterable[UsageLimit], now: datetime) -> list[UsageLimit]:
    """The caps that refuse a dispatch at ``now``: in force, and ``now`` inside their month (a
    new month starts clear without any event)."""
    return sorted(
        (
            limit
            for limit in limits
            if limit.in_force and limit.period_start <= now < limit.period_end
        ),
        key=lambda limit: limit.meter,
    )


def _instant(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _over_limit(blocking: list[UsageLimit]) -> DispatchRejectedError:
    meters = ", ".join(
        f"{limit.meter} ({limit.quantity} used, cap {limit.monthly_quantity})"
        if limit.monthly_quantity is not None
        else limit.meter
        for limit in blocking
    )
    ends = _instant(max(limit.period_end for limit in blocking))
    return DispatchRejectedError(
        f"the clinic has reached its monthly usage cap on {meters}; agents can be dispatched "
        f"again when the billing period ends at {ends}, or once the cap is raised",
        code="usage_limit_reached",
        status=402,
        details=[
            {
                "meter": limit.meter,
                "quantity": limit.quantity,
                "monthlyQuantity": limit.monthly_quantity,
                "periodStart": _instant(limit.period_start),
                "periodEnd": _instant(limit.period_end),
            }
            for limit in blocking
        ],
    )


def decide_avatar(asked: str | None, catalog: Catalog) -> str:
    """The avatar a dispatch records: "" when none was asked (the agent applies the
    deployment's default, falling back to voice only with an event if it cannot), else the one
    asked, refused now (400) when unknown or when its provider's settings are missing: a clinic
    that asks for a face explicitly is told at once rather than by a silent voice-only call."""
    if asked is None:
        return ""
    if asked not in catalog.avatars:
        raise DispatchRejectedError(
            f"unknown avatar {asked!r}: one of {', '.join(catalog.avatars)}",
            code="unknown_avatar",
            details=[{"field": "avatar", "value": asked, "valid": list(catalog.avatars)}],
        )
    missing = catalog.avatars[asked]
    if missing:
        raise DispatchRejectedError(
            f"avatar {asked!r} is not available in this deployment: {', '.join(missing)} not set",
            code="avatar_unavailable",
            details=[{"field": "avatar", "value": asked, "missing": list(missing)}],
        )
    return asked


def decide_request(
    request: DispatchAgentRequest,
    *,
    catalog: Catalog,
    dispatch_id: str,
    now: datetime,
    deadline_seconds: int,
    usage_limits: Iterable[UsageLimit] = (),
) -> AgentDispatchRequested:
    """The event a valid request becomes; DispatchRejectedError otherwise. ``usage_limits`` are
    the tenant's caps as billing last announced them: one in force at ``now`` is a 402."""
    blocking = blocking_limits(usage_limits, now)
    if blocking:
        raise _over_limit(blocking)
    role = catalog.roles.get(request.role)
    if role is None:
        raise DispatchRejectedError(
            f"unknown role {request.role!r}",
            code="unknown_role",
            details=[{"field": "role", "valid": sorted(catalog.roles)}],
        )
    if request.instructions.strip() and role.instructions == "none":
        raise DispatchRejectedError(
            f"role {role.name!r} does not take instructions", code="instructions_not_allowed"
        )
    if request.instructions_mode == "replace" and role.instructions != "replace":
        raise DispatchRejectedError(
            f"role {role.name!r} does not allow replacing its instructions",
            code="instructions_not_allowed",
        )
    models: dict[str, str] = {}
    unknown: list[dict[str, object]] = []
    kinds = ("realtime",) if request.realtime else ("stt", "llm", "tts")
    for kind in kinds:
        asked = getattr(request, kind)
        if kind == "realtime" and asked == "default":
            asked = catalog.defaults.get("realtime")
        resolved = catalog.resolve_model(kind, asked)
        if resolved is None:
            unknown.append({"field": kind, "value": asked, "valid": list(catalog.models[kind])})
        else:
            models[kind] = resolved
    if unknown:
        names = ", ".join(f"{u['field']}={u['value']!r}" for u in unknown)
        raise DispatchRejectedError(
            f"unknown model: {names}", code="unknown_model", details=unknown
        )
    avatar = decide_avatar(request.avatar, catalog)
    if request.appointment_id and not request.patient_ref:
        raise DispatchRejectedError(
            "appointmentId needs patientRef: the appointment's patient",
            code="patient_ref_required",
            details=[{"field": "patientRef", "requiredWith": "appointmentId"}],
        )
    return AgentDispatchRequested(
        dispatch_id=dispatch_id,
        room=request.room,
        role=role.name,
        instructions=request.instructions.strip(),
        instructions_mode=request.instructions_mode,
        language=request.language,
        participant=request.participant or "",
        requested_at=now,
        deadline_at=now + timedelta(seconds=deadline_seconds),
        avatar=avatar,
        patient_ref=request.patient_ref or "",
        appointment_id=request.appointment_id or "",
        patient_is_minor=request.patient_is_minor,
        **models,
    )


class DispatchState(msgspec.Struct, frozen=True, kw_only=True):
    """One dispatch as the event log tells it (a row of ``agent_dispatches``)."""

    dispatch_id: str
    tenant_id: str
    room: str
    role: str
    state: str
    reason: str = ""
    detail: str = ""
    language: str
    stt: str = ""
    llm: str = ""
    tts: str = ""
    realtime: str = ""
    patient_ref: str = ""
    appointment_id: str = ""
    livekit_dispatch_id: str = ""
    agent_identity: str = ""
    worker_id: str = ""
    requested_at: datetime
    deadline_at: datetime
    dispatched_at: datetime | None = None
    joined_at: datetime | None = None
    end_requested_at: datetime | None = None
    ended_at: datetime | None = None


def _end(
    state: DispatchState, *, failed: bool, reason: str, detail: str, at: datetime
) -> DispatchState:
    return msgspec.structs.replace(
        state, state="failed" if failed else "ended", reason=reason, detail=detail, ended_at=at
    )


def evolve(state: DispatchState | None, event: Envelope) -> DispatchState | None:
    """The state after one event. Ended and failed are final: later events change nothing
    (a session that starts after its dispatch failed is told to end by the dispatcher)."""
    data = event.data
    if isinstance(data, AgentDispatchRequested):
        if state is not None:
            return state
        return DispatchState(
            dispatch_id=data.dispatch_id,
            tenant_id=event.tenant,
            room=data.room,
            role=data.role,
            state="requested",
            language=data.language,
            stt=data.stt,
            llm=data.llm,
            tts=data.tts,
            realtime=data.realtime,
            patient_ref=data.patient_ref,
            appointment_id=data.appointment_id,
            requested_at=data.requested_at,
            deadline_at=data.deadline_at,
        )
    if state is None or state.state in TERMINAL:
        return state
    replace = msgspec.structs.replace
    if isinstance(data, AgentDispatched):
        new = "dispatched" if state.state == "requested" else state.state
        return replace(
            state,
            state=new,
            livekit_dispatch_id=data.livekit_dispatch_id,
            dispatched_at=data.dispatched_at,
        )
    if isinstance(data, AgentSessionStarted):
        return replace(
            state,
            state="joined",
            joined_at=data.started_at,
            agent_identity=data.agent_identity,
            worker_id=data.worker_id,
        )
    if isinstance(data, AgentEndRequested):
        if state.state in OPEN:  # nobody there yet: cancelling is ending
            return _end(
                replace(state, end_requested_at=data.requested_at),
                failed=False,
                reason="cancelled",
                detail="ended before an agent joined",
                at=data.requested_at,
            )
        return replace(state, end_requested_at=state.end_requested_at or data.requested_at)
    if isinstance(data, AgentSessionEnded):
        return _end(
            state,
            failed=data.reason == "error",
            reason=data.reason,
            detail=data.detail,
            at=data.ended_at,
        )
    if isinstance(data, AgentSessionFailed):
        return _end(state, failed=True, reason=data.reason, detail=data.detail, at=data.failed_at)
    if isinstance(data, AgentDispatchFailed):
        return _end(state, failed=True, reason=data.reason, detail=data.detail, at=data.failed_at)
    return state


def fold(state: DispatchState | None, events: Iterable[Envelope]) -> DispatchState | None:
    """The state after several events, in order."""
    for event in events:
        state = evolve(state, event)
    return state


def needs_parking(state: DispatchState | None, event: Envelope) -> bool:
    """An event about a dispatch whose request the read model has not seen yet: folding it now
    would lose it (``evolve`` cannot start from it), so it waits for the request."""
    return state is None and not isinstance(event.data, AgentDispatchRequested)


def worker_lost(
    state: DispatchState, *, worker_id: str, detail: str, at: datetime
) -> DispatchState:
    """A joined dispatch whose worker died: failed, ``worker_lost``. It is not re-dispatched:
    a consultation cannot resume mid-sentence with a new agent that heard nothing; the caller
    decides whether to dispatch again."""
    if state.state != "joined" or state.worker_id != worker_id:
        return state
    return _end(state, failed=True, reason="worker_lost", detail=detail, at=at)


def past_deadline(state: DispatchState, now: datetime) -> bool:
    return state.state in OPEN and now >= state.deadline_at
