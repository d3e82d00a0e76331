"""The dispatcher's pure parts: deciding a request, the dispatch state machine, the pool's plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from services.dispatcher.catalog import build_catalog, load_roles
from services.dispatcher.core import (
    DispatchAgentRequest,
    DispatchRejectedError,
    decide_request,
    evolve,
    fold,
    needs_parking,
    past_deadline,
)
from services.pool.core import (
    IDLE_SECONDS,
    WorkerView,
    next_attempt,
    plan,
    restart_delay,
)
from shared.config import Settings
from shared.events import envelope
from shared.events.agents import (
    AgentDispatched,
    AgentDispatchFailed,
    AgentEndRequested,
    AgentSessionEnded,
    AgentSessionFailed,
    AgentSessionStarted,
)

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TENANT = "tabcdefghij"
CATALOG = build_catalog(msgspec.structs.replace(Settings(), agent_models="openai/llama3.1:8b"))


def decide(**fields: object) -> object:
    values: dict[str, object] = {"room": "consult-1", **fields}
    request = msgspec.convert(values, DispatchAgentRequest, from_attributes=False)
    return decide_request(request, catalog=CATALOG, dispatch_id="d1", now=T0, deadline_seconds=10)


def test_a_request_gets_the_default_models_and_a_deadline() -> None:
    event = decide(instructions="  Seja breve.  ")
    assert event.role == "generic"  # type: ignore[attr-defined]
    assert (event.stt, event.llm, event.tts) == (  # type: ignore[attr-defined]
        "google/gemini-3.5-transcribe-live",
        "google/gemini-2.5-flash",
        "google/gemini-2.5-flash-preview-tts",
    )
    assert event.instructions == "Seja breve."  # type: ignore[attr-defined]
    assert event.language == "pt-BR"  # type: ignore[attr-defined]
    assert event.deadline_at == T0 + timedelta(seconds=10)  # type: ignore[attr-defined]


def test_models_may_be_bare_names_or_deployment_extras() -> None:
    event = decide(stt="whisper-1", llm="openai/llama3.1:8b", tts="gpt-4o-mini-tts")
    assert (event.stt, event.llm, event.tts) == (  # type: ignore[attr-defined]
        "openai/whisper-1",
        "openai/llama3.1:8b",
        "openai/gpt-4o-mini-tts",
    )


def test_realtime_replaces_the_pipeline() -> None:
    event = decide(realtime="default", stt="whisper-1")
    assert event.realtime == "google/gemini-2.5-flash-native-audio-preview-12-2025"  # type: ignore[attr-defined]
    assert (event.stt, event.llm, event.tts) == ("", "", "")  # type: ignore[attr-defined]


def test_unknown_role_lists_the_valid_ones() -> None:
    with pytest.raises(DispatchRejectedError) as failure:
        decide(role="surgeon")
    assert failure.value.code == "unknown_role"
    assert failure.value.details == [
        {"field": "role", "valid": ["copilot", "generic", "intake", "receptionist"]}
    ]


def test_unknown_models_list_the_valid_ones_of_their_kind() -> None:
    with pytest.raises(DispatchRejectedError) as failure:
        decide(llm="gpt-99", tts="openai/nope")
    assert failure.value.code == "unknown_model"
    details = failure.value.details or []
    assert [d["field"] for d in details] == ["llm", "tts"]
    assert "openai/gpt-4o-mini" in details[0]["valid"]  # type: ignore[operator]
    assert "openai/tts-1" in details[1]["valid"]  # type: ignore[operator]


def test_replacing_instructions_only_where_the_role_allows() -> None:
    assert decide(role="generic", instructions="x", instructionsMode="replace")
    with pytest.raises(DispatchRejectedError, match="does not allow replacing"):
        decide(role="intake", instructions="x", instructionsMode="replace")


def test_the_patient_goes_into_the_event_and_the_read_model() -> None:
    event = decide(role="intake", patientRef="pac-000123", appointmentId="a1", patientIsMinor=True)
    assert (event.patient_ref, event.appointment_id, event.patient_is_minor) == (  # type: ignore[attr-defined]
        "pac-000123",
        "a1",
        True,
    )
    state = evolve(None, ev(event))  # type: ignore[arg-type]
    assert state is not None and (state.patient_ref, state.appointment_id) == ("pac-000123", "a1")
    plain = decide(role="intake")
    assert (plain.patient_ref, plain.appointment_id, plain.patient_is_minor) == ("", "", False)  # type: ignore[attr-defined]


def test_an_appointments_dispatch_must_name_its_patient() -> None:
    with pytest.raises(DispatchRejectedError) as failure:
        decide(role="intake", appointmentId="a1")
    assert failure.value.code == "patient_ref_required"


@pytest.mark.parametrize("bad", ["pac 1", "pac-1\n", "p" * 65, "ana@clinica.com", "123.456.789-09"])
def test_a_patient_ref_is_a_pseudonymous_id(bad: str) -> None:
    with pytest.raises(msgspec.ValidationError, match="patientRef"):
        decide(patientRef=bad)


def test_the_roles_the_dispatcher_reads_are_the_agents_registry() -> None:
    roles = load_roles()
    assert roles["generic"].instructions == "replace"
    assert roles["intake"].instructions == "append"


# -- the state machine --------------------------------------------------------------------------


def ev(data: object) -> object:
    return envelope(data, source="mediai/test", tenant=TENANT, subject="d1")  # type: ignore[arg-type]


def replay(*events: object) -> object:
    state = None
    for event in (ev(decide()), *(ev(e) for e in events)):
        state = evolve(state, event)  # type: ignore[arg-type]
    return state


def started(worker: str = "w1") -> AgentSessionStarted:
    return AgentSessionStarted(
        dispatch_id="d1",
        room="consult-1",
        role="generic",
        worker_id=worker,
        agent_identity="agent-generic-1",
        started_at=T0 + timedelta(seconds=1),
    )


def test_requested_dispatched_joined_ended() -> None:
    assert replay().state == "requested"  # type: ignore[attr-defined]
    dispatched = AgentDispatched(
        dispatch_id="d1",
        room="consult-1",
        role="generic",
        livekit_dispatch_id="AD_1",
        agent_name="a",
        dispatched_at=T0,
    )
    assert replay(dispatched).state == "dispatched"  # type: ignore[attr-defined]
    joined = replay(dispatched, started())
    assert (joined.state, joined.worker_id, joined.livekit_dispatch_id) == (  # type: ignore[attr-defined]
        "joined",
        "w1",
        "AD_1",
    )
    ended = replay(
        dispatched,
        started(),
        AgentSessionEnded(
            dispatch_id="d1",
            room="consult-1",
            role="generic",
            reason="end_requested",
            ended_at=T0 + timedelta(seconds=30),
        ),
    )
    assert (ended.state, ended.reason) == ("ended", "end_requested")  # type: ignore[attr-defined]


def test_a_session_started_before_dispatched_was_seen_stays_joined() -> None:
    dispatched = AgentDispatched(
        dispatch_id="d1",
        room="consult-1",
        role="generic",
        livekit_dispatch_id="AD_1",
        agent_name="a",
        dispatched_at=T0,
    )
    assert replay(started(), dispatched).state == "joined"  # type: ignore[attr-defined]


def test_events_before_their_request_wait_for_it_and_fold_in_order() -> None:
    dispatched = AgentDispatched(
        dispatch_id="d1",
        room="consult-1",
        role="generic",
        livekit_dispatch_id="AD_1",
        agent_name="a",
        dispatched_at=T0,
    )
    early = [ev(dispatched), ev(started())]
    assert all(needs_parking(None, e) for e in early)  # type: ignore[arg-type]
    request = ev(decide())
    assert not needs_parking(None, request)  # type: ignore[arg-type]
    state = fold(evolve(None, request), early)  # type: ignore[arg-type]
    assert state is not None
    assert (state.state, state.livekit_dispatch_id, state.worker_id) == ("joined", "AD_1", "w1")
    assert not needs_parking(state, early[0])  # type: ignore[arg-type]


def test_failures_are_final_and_carry_their_reason() -> None:
    failed = AgentDispatchFailed(
        dispatch_id="d1",
        room="consult-1",
        role="generic",
        reason="no_worker",
        detail="nobody came",
        failed_at=T0,
    )
    state = replay(failed, started())
    assert (state.state, state.reason, state.joined_at) == ("failed", "no_worker", None)  # type: ignore[attr-defined]
    refused = AgentSessionFailed(
        dispatch_id="d1",
        reason="missing_credentials",
        detail="provider google: GOOGLE_API_KEY is not set",
        failed_at=T0,
    )
    assert replay(refused).reason == "missing_credentials"  # type: ignore[attr-defined]
    crashed = AgentSessionEnded(
        dispatch_id="d1",
        room="consult-1",
        role="generic",
        reason="error",
        detail="LLM",
        ended_at=T0,
    )
    assert replay(started(), crashed).state == "failed"  # type: ignore[attr-defined]


def test_ending_before_anyone_joined_cancels() -> None:
    end = AgentEndRequested(dispatch_id="d1", room="consult-1", requested_at=T0)
    state = replay(end)
    assert (state.state, state.reason) == ("ended", "cancelled")  # type: ignore[attr-defined]
    joined_then_asked = replay(started(), end)
    assert joined_then_asked.state == "joined"  # type: ignore[attr-defined]
    assert joined_then_asked.end_requested_at == T0  # type: ignore[attr-defined]


def test_the_deadline() -> None:
    state = replay()
    assert not past_deadline(state, T0 + timedelta(seconds=9))  # type: ignore[arg-type]
    assert past_deadline(state, T0 + timedelta(seconds=10))  # type: ignore[arg-type]
    assert not past_deadline(replay(started()), T0 + timedelta(seconds=60))  # type: ignore[arg-type]


# -- the pool's plan ----------------------------------------------------------------------------


def worker(
    wid: str,
    load: float | None = 0.0,
    *,
    registered: bool = True,
    jobs: int = 0,
    idle: float = 0.0,
    stopping: bool = False,
) -> WorkerView:
    return WorkerView(
        worker_id=wid,
        registered=registered,
        load=load,
        active_jobs=jobs,
        idle_seconds=idle,
        stopping=stopping,
    )


def test_the_pool_starts_its_minimum() -> None:
    assert plan([], minimum=2, maximum=4, scale_up_load=0.75).start == 2
    decision = plan([worker("a")], minimum=2, maximum=4, scale_up_load=0.75)
    assert (decision.start, decision.reason) == (1, "minimum")
    # a dead worker waiting for its restart still counts
    assert plan([worker("a")], minimum=2, maximum=4, scale_up_load=0.75, restarting=1).start == 0


def test_the_pool_grows_by_one_when_every_worker_is_loaded() -> None:
    busy = [worker("a", 0.75, jobs=3), worker("b", 1.0, jobs=4)]
    decision = plan(busy, minimum=1, maximum=3, scale_up_load=0.75)
    assert (decision.start, decision.reason) == (1, "scale_up")
    assert plan(busy, minimum=1, maximum=2, scale_up_load=0.75).start == 0  # at its maximum
    one_free = [worker("a", 0.75, jobs=3), worker("b", 0.25, jobs=1)]
    assert plan(one_free, minimum=1, maximum=3, scale_up_load=0.75).start == 0
    starting = [worker("a", 1.0, jobs=4), worker("b", None, registered=False)]
    assert plan(starting, minimum=1, maximum=3, scale_up_load=0.75).start == 0


def test_the_pool_shrinks_one_idle_worker_at_a_time_down_to_its_minimum() -> None:
    idle = [worker("a", idle=IDLE_SECONDS + 5), worker("b", idle=IDLE_SECONDS + 50)]
    assert plan(idle, minimum=1, maximum=3, scale_up_load=0.75).stop == ("b",)
    assert plan(idle, minimum=2, maximum=3, scale_up_load=0.75).stop == ()
    recent = [worker("a", idle=5.0), worker("b", idle=5.0)]
    assert plan(recent, minimum=1, maximum=3, scale_up_load=0.75).stop == ()


def test_restarts_back_off_and_reset_after_a_stable_run() -> None:
    assert [restart_delay(a) for a in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert next_attempt(3, uptime_seconds=5.0) == 4
    assert next_attempt(3, uptime_seconds=600.0) == 0
