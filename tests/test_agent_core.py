"""The agent's pure parts: job metadata validation, roles as data and their prompts, usage deltas."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import msgspec
import pytest

from services.agent.metadata import MetadataError, parse_metadata
from services.agent.providers import ProviderError, check_credentials, missing_credentials
from services.agent.roles import (
    APPENDED_HEADING,
    RoleError,
    load_registry,
    load_role,
    render_instructions,
)
from services.agent.tools import TOOLS
from services.agent.usage import Totals, UsageMeter, totals_from_model_usage
from services.agent.worker import agent_identity, check_job
from shared.config import Settings
from shared.events import CODEC, envelope
from shared.events.agents import AgentDispatchRequested, AgentUsageReported

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TENANT = "tabcdefghij"


def request(**changes: object) -> AgentDispatchRequested:
    values: dict[str, object] = {
        "dispatch_id": "0195f000-0000-7000-8000-00000000abcd",
        "room": "consult-1",
        "role": "generic",
        "instructions": "Fale sobre a clínica.",
        "stt": "openai/whisper-1",
        "llm": "openai/gpt-4o-mini",
        "tts": "openai/tts-1",
        "requested_at": T0,
        "deadline_at": T0 + timedelta(seconds=10),
    }
    values.update(changes)
    return AgentDispatchRequested(**values)  # type: ignore[arg-type]


def metadata(data: AgentDispatchRequested, tenant: str = TENANT) -> str:
    return CODEC.encode(
        envelope(data, source="mediai/dispatcher", tenant=tenant, subject=data.dispatch_id)
    ).decode()


# -- metadata ---------------------------------------------------------------------------------


def test_metadata_is_the_dispatch_request_event() -> None:
    meta = parse_metadata(metadata(request()))
    assert meta.tenant == TENANT
    assert meta.request == request()
    assert meta.models == ["openai/whisper-1", "openai/gpt-4o-mini", "openai/tts-1"]
    assert meta.providers == ["openai"]


def test_a_realtime_dispatch_uses_only_its_model() -> None:
    meta = parse_metadata(metadata(request(stt="", tts="", llm="", realtime="google/gemini-live")))
    assert meta.models == ["google/gemini-live"]
    assert meta.providers == ["google"]


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ("", "no metadata"),
        ("{not json", "malformed"),
        ('{"specversion":"1.0"}', "malformed"),
        (metadata(request(room="no spaces allowed")), "not a room name"),
        (metadata(request(language="portuguese")), "not a language tag"),
        (metadata(request(stt="")), "needs stt, llm and tts"),
        (metadata(request(llm="gpt-4o-mini")), "not <provider>/<model>"),
        (metadata(request(tts="azure/voice")), "unknown provider 'azure'"),
        (metadata(request(instructions_mode="merge")), "instructions_mode"),
        (metadata(request(participant="~bad")), "not a participant identity"),
        (metadata(request(patient_ref="Maria da Silva")), "not a patient reference"),
        (metadata(request(patient_ref="pac-1\n")), "not a patient reference"),
        (metadata(request(), tenant="not-a-tenant"), "not a tenant id"),
    ],
)
def test_invalid_metadata_is_one_clear_line(raw: str, problem: str) -> None:
    with pytest.raises(MetadataError, match=problem) as failure:
        parse_metadata(raw)
    assert "\n" not in str(failure.value)


def test_metadata_of_another_event_type_is_refused() -> None:
    other = envelope(
        AgentUsageReported(
            dispatch_id="d", room="r", role="generic", period_start=T0, period_end=T0
        ),
        source="mediai/agent",
        tenant=TENANT,
        subject="d",
    )
    with pytest.raises(MetadataError, match="not a dispatch request"):
        parse_metadata(CODEC.encode(other))


# -- roles --------------------------------------------------------------------------------------


def test_the_registry_has_the_four_roles_and_their_tools_exist() -> None:
    roles = load_registry()
    assert {"intake", "copilot", "receptionist", "generic"} <= set(roles)
    for role in roles.values():
        assert role.template("pt-BR")
        assert all(tool in TOOLS for tool in role.tools), role.name
    assert roles["copilot"].speaks is False
    assert roles["copilot"].text_to == ["doctor"]
    assert roles["generic"].instructions == "replace"


def test_a_language_without_its_prompt_falls_back_to_pt_br() -> None:
    role = load_registry()["intake"]
    assert role.template("en-US") == role.template("pt-BR")


def write_role(folder: Path, toml: str, prompt: str | None = "Você é {{instructions}}") -> Path:
    folder.mkdir(parents=True)
    (folder / "role.toml").write_text(toml)
    if prompt is not None:
        (folder / "prompt.pt-BR.md").write_text(prompt)
    return folder


@pytest.mark.parametrize(
    ("toml", "prompt", "problem"),
    [
        ('name = "other"', "x", "must match its folder"),
        ('name = "r"\nspeaks = false', "x", "needs text_to"),
        # Who reads a text-only role is a role signed into a token, not an identity prefix.
        ('name = "r"\nspeaks = false\ntext_to = ["doctor-"]', "x", "not roles a token gives"),
        ('name = "r"\nwhatever = 1', "x", "whatever"),
        ('name = "r"\ninstructions = "merge"', "x", "instructions"),
        ('name = "r"', None, "prompt.pt-BR.md is missing"),
        ("name = ", "x", "role"),
    ],
)
def test_invalid_role_files_are_refused_naming_the_file(
    tmp_path: Path, toml: str, prompt: str | None, problem: str
) -> None:
    folder = write_role(tmp_path / "r", toml, prompt)
    with pytest.raises(RoleError, match=problem):
        load_role(folder)


def test_role_json_is_read_too(tmp_path: Path) -> None:
    folder = tmp_path / "scribe"
    folder.mkdir()
    (folder / "role.json").write_text('{"name": "scribe", "speaks": false, "text_to": ["doctor"]}')
    (folder / "prompt.pt-BR.md").write_text("Anote.")
    (folder / "questionnaire.json").write_text("{}")  # other files belong to the role's code
    role = load_role(folder)
    assert (role.speaks, role.text_to, role.template("pt-BR")) == (False, ["doctor"], "Anote.")


def test_instructions_are_added_where_the_template_says() -> None:
    role = load_registry()["intake"]
    rendered = render_instructions(
        role, language="pt-BR", instructions="Paciente pediátrico.", mode="append"
    )
    assert "{{instructions}}" not in rendered
    assert rendered.startswith(role.template("pt-BR").split("{{instructions}}")[0].strip())
    assert rendered.endswith("Paciente pediátrico.")


def test_instructions_are_appended_under_a_heading_without_a_placeholder(tmp_path: Path) -> None:
    role = load_role(write_role(tmp_path / "r", 'name = "r"', "Seja breve."))
    rendered = render_instructions(
        role, language="pt-BR", instructions="Atenda em inglês.", mode="append"
    )
    assert rendered == f"Seja breve.\n\n{APPENDED_HEADING}\n\nAtenda em inglês."
    assert render_instructions(role, language="pt-BR", instructions="  ", mode="append") == (
        "Seja breve."
    )


def test_replacing_the_template_only_where_the_role_allows_it() -> None:
    roles = load_registry()
    assert (
        render_instructions(
            roles["generic"], language="pt-BR", instructions="Só isto.", mode="replace"
        )
        == "Só isto."
    )
    with pytest.raises(RoleError, match="does not allow replacing"):
        render_instructions(
            roles["intake"], language="pt-BR", instructions="Só isto.", mode="replace"
        )


def test_a_role_without_dispatch_instructions_refuses_them(tmp_path: Path) -> None:
    role = load_role(write_role(tmp_path / "r", 'name = "r"\ninstructions = "none"', "Fixo."))
    assert render_instructions(role, language="pt-BR", instructions="", mode="append") == "Fixo."
    with pytest.raises(RoleError, match="does not take instructions"):
        render_instructions(role, language="pt-BR", instructions="mais", mode="append")


# -- a job the worker can run --------------------------------------------------------------------


def settings(**changes: object) -> Settings:
    return msgspec.structs.replace(Settings(), **changes)


def test_missing_credentials_fail_the_job_with_the_setting_named() -> None:
    meta = parse_metadata(metadata(request(stt="google/gemini-3.5-transcribe-live")))
    with pytest.raises(
        ProviderError, match="provider google: GOOGLE_API_KEY is not set"
    ) as failure:
        check_credentials(meta, settings(openai_api_key="k"))
    assert failure.value.reason == "missing_credentials"
    check_credentials(meta, settings(openai_api_key="k", google_api_key="g"))
    assert missing_credentials(settings(google_api_key="g")) == {
        "openai": "OPENAI_API_KEY is not set (any value for a server without keys)"
    }


def test_check_job_refuses_unknown_roles_and_forbidden_replacements() -> None:
    roles, ok = load_registry(), settings(openai_api_key="k")
    assert check_job(parse_metadata(metadata(request())), roles, ok).name == "generic"
    with pytest.raises(RoleError, match="unknown role 'surgeon'"):
        check_job(parse_metadata(metadata(request(role="surgeon"))), roles, ok)
    with pytest.raises(RoleError, match="does not allow replacing"):
        check_job(
            parse_metadata(metadata(request(role="intake", instructions_mode="replace"))), roles, ok
        )


def test_agent_identities_are_unique_per_dispatch_and_say_the_role() -> None:
    one = parse_metadata(metadata(request(dispatch_id="0195f000-0000-7000-8000-000000000001")))
    two = parse_metadata(metadata(request(dispatch_id="0195f000-0000-7000-8000-000000000002")))
    assert agent_identity(one) == "agent-generic-000000000001"
    assert agent_identity(one) != agent_identity(two)


# -- usage ----------------------------------------------------------------------------------------


def usage(kind: str, **values: float) -> SimpleNamespace:
    defaults = {
        "llm_usage": dict(
            input_tokens=0,
            output_tokens=0,
            input_cached_tokens=0,
            input_audio_tokens=0,
            output_audio_tokens=0,
            input_text_tokens=0,
            output_text_tokens=0,
        ),
        "stt_usage": dict(audio_duration=0.0),
        "tts_usage": dict(characters_count=0, audio_duration=0.0),
    }[kind]
    return SimpleNamespace(type=kind, **{**defaults, **values})


def test_model_usage_of_every_model_is_summed() -> None:
    totals = totals_from_model_usage(
        [
            usage("llm_usage", input_tokens=100, output_tokens=20, input_cached_tokens=30),
            usage(
                "llm_usage",
                input_tokens=50,
                output_tokens=5,
                input_audio_tokens=40,
                output_audio_tokens=60,
                input_text_tokens=10,
                output_text_tokens=5,
            ),
            usage("stt_usage", audio_duration=4.5),
            usage("tts_usage", characters_count=32, audio_duration=1.9),
            SimpleNamespace(type="eot_usage", total_requests=3),  # not billed: ignored
        ],
        video_seconds=12.0,
    )
    assert totals == Totals(
        llm_prompt_tokens=150,
        llm_completion_tokens=25,
        llm_cached_tokens=30,
        stt_audio_seconds=4.5,
        tts_characters=32,
        tts_audio_seconds=1.9,
        realtime_input_audio_tokens=40,
        realtime_output_audio_tokens=60,
        realtime_input_text_tokens=10,
        realtime_output_text_tokens=5,
        video_seconds=12.0,
    )


def test_reports_are_deltas_whose_sum_is_the_total() -> None:
    meter = UsageMeter(
        dispatch_id="d1",
        room="r",
        role="generic",
        started_at=T0,
        provider="openai",
        llm_model="openai/gpt-4o-mini",
    )
    first = meter.report(
        Totals(llm_prompt_tokens=100, stt_audio_seconds=3.0), T0 + timedelta(seconds=15)
    )
    second = meter.report(
        Totals(llm_prompt_tokens=160, stt_audio_seconds=3.0, tts_characters=40),
        T0 + timedelta(seconds=30),
    )
    last = meter.report(
        Totals(llm_prompt_tokens=160, stt_audio_seconds=5.5, tts_characters=40),
        T0 + timedelta(seconds=37),
        final=True,
    )
    reports = [first, second, last]
    assert [r.llm_prompt_tokens for r in reports] == [100, 60, 0]
    assert [r.stt_audio_seconds for r in reports] == [3.0, 0.0, 2.5]
    assert [r.tts_characters for r in reports] == [0, 40, 0]
    assert [r.session_seconds for r in reports] == [15.0, 15.0, 7.0]
    assert [r.sequence for r in reports] == [1, 2, 3]
    assert [r.final for r in reports] == [False, False, True]
    assert first.period_end == second.period_start and second.period_end == last.period_start
    assert {r.llm_model for r in reports} == {"openai/gpt-4o-mini"}
    assert sum(r.session_seconds for r in reports) == 37.0
    with pytest.raises(RuntimeError, match="final"):
        meter.report(Totals(), T0 + timedelta(seconds=40))


def test_each_tool_call_is_an_event_without_its_arguments_or_result() -> None:
    from livekit.agents.llm import FunctionCall, FunctionCallOutput
    from livekit.agents.voice.events import FunctionToolsExecutedEvent

    from services.agent.tooluse import tool_calls

    calls = [
        FunctionCall(
            call_id="c1", name="search_doctors", arguments='{"name": "Lia"}', created_at=10.0
        ),
        FunctionCall(call_id="c2", name="book_appointment", arguments="{}", created_at=10.5),
    ]
    outputs = [
        FunctionCallOutput(
            call_id="c1", name="search_doctors", output="Dra. Lia", is_error=False, created_at=10.25
        ),
        FunctionCallOutput(
            call_id="c2", name="book_appointment", output="ocupado", is_error=True, created_at=11.0
        ),
    ]
    executed = FunctionToolsExecutedEvent(function_calls=calls, function_call_outputs=outputs)
    events = tool_calls(executed, dispatch_id="d1", room="sala-1", role="receptionist")
    assert [(e.call_id, e.tool, e.ok, e.duration_seconds) for e in events] == [
        ("c1", "search_doctors", True, 0.25),
        ("c2", "book_appointment", False, 0.5),
    ]
    assert events[0].called_at == datetime.fromtimestamp(10.0, UTC)
    assert (
        "Lia"
        not in CODEC.encode(envelope(events[0], source="t", tenant="t", subject="d1")).decode()
    )
