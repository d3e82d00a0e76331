"""The medical roles' pure cores, no infrastructure: consent decisions and wording, the anamnesis
record (FHIR R4 QuestionnaireResponse, summary, citations), the copilot's hint policy, booking
confirmations, the avatar choice, and the role files that wire them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse

from services.agent import avatar, consent, copilot, reception, vision
from services.agent.intake import RECORD_ANSWER_SCHEMA
from services.agent.intake_record import (
    PATIENT_REF_SYSTEM,
    AnswerBook,
    AnswerError,
    load_questionnaire,
    questionnaire_response,
    summary_pt_br,
    to_fhir_value,
    transcript_refs,
)
from services.agent.roles import load_registry
from services.agent.tools import TOOLS
from services.scheduling.anamnesis import validate_record
from shared.events.clinical import AnamnesisRecorded
from tests.support import stack_settings

Q = load_questionnaire()
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


# -- consent --------------------------------------------------------------------------------


def test_consent_is_given_only_to_everything_that_was_asked() -> None:
    assert consent.decide(ai_assistance=True, recording_asked=False, recording=None).given
    assert consent.decide(ai_assistance=True, recording_asked=True, recording=True).given
    assert (
        consent.decide(ai_assistance=False, recording_asked=False, recording=None).refused
        == "ai_assistance"
    )
    # Recording was mentioned and not clearly accepted: not consent.
    for answer in (False, None):
        decision = consent.decide(ai_assistance=True, recording_asked=True, recording=answer)
        assert (decision.given, decision.refused) == (False, "recording")


def test_consent_wording_says_what_the_agent_is_and_asks_about_recording_when_recorded() -> None:
    plain = consent.opening("intake", recording=False)
    recorded = consent.opening("intake", recording=True)
    assert "inteligência artificial" in plain and "não sou uma pessoa" in plain
    assert "adiantar a sua consulta" in plain
    assert "gravada" not in plain and "gravada" in recorded and recorded.endswith("gravação?")
    phase = consent.phase_instructions("PROMPT DO PAPEL", recording=True)
    assert phase.startswith("PROMPT DO PAPEL") and consent.PHASE_HEADING in phase
    assert "gravação" in phase and "SAMU" in phase and consent.TOOL in phase


def test_a_minors_consent_is_asked_of_the_guardian_in_its_own_versioned_wording() -> None:
    for role in ("intake", "receptionist"):
        for recording in (False, True):
            words = consent.opening(role, recording=recording, guardian=True)
            assert words.startswith(consent.INTRO)  # who it is: an AI, not a person
            assert "O(a) responsável pelo(a) paciente autoriza" in words
            assert "menor de idade" in words and ("gravação" in words) == recording
            assert words != consent.opening(role, recording=recording)
    assert consent.GUARDIAN_WORDING != consent.WORDING
    phase = consent.phase_instructions("PROMPT DO PAPEL", recording=False, guardian=True)
    assert phase.startswith("PROMPT DO PAPEL") and consent.PHASE_HEADING in phase
    assert "Só o(a) responsável pode autorizar" in phase and "guardian_relation" in phase
    assert "SAMU" in phase and consent.TOOL in phase
    assert consent.goodbye("ai_assistance", guardian=True) == consent.GUARDIAN_REFUSED
    assert consent.goodbye("recording", guardian=True) == consent.GUARDIAN_RECORDING_REFUSED
    assert consent.goodbye("recording") == consent.RECORDING_REFUSED
    assert consent.GUARDIAN_RELATIONS == (
        "mother",
        "father",
        "grandparent",
        "legal_guardian",
        "other",
    )


# -- the anamnesis record ---------------------------------------------------------------------


def test_spoken_answers_become_typed_fhir_values() -> None:
    items = Q.items
    assert to_fhir_value(items["hda.inicio"], " de repente ") == {"valueString": "de repente"}
    assert to_fhir_value(items["hda.intensidade"], "7") == {"valueInteger": 7}
    assert to_fhir_value(items["hda.intensidade"], "nota 8.") == {"valueInteger": 8}
    assert to_fhir_value(items["alergias.possui"], "Não") == {"valueBoolean": False}
    assert to_fhir_value(items["medicamentos.em-uso"], "sim") == {"valueBoolean": True}
    assert to_fhir_value(items["identificacao.data-nascimento"], "31/05/1980") == {
        "valueDate": "1980-05-31"
    }
    coding = to_fhir_value(items["historia-social.tabagismo"], "Ex-fumante")["valueCoding"]
    assert coding["code"] == "tabagismo-ex"
    assert to_fhir_value(items["identificacao.sexo"], "female")["valueCoding"]["display"] == (
        "Feminino"
    )
    for link_id, bad in [
        ("hda.intensidade", "11"),
        ("hda.intensidade", "forte"),
        ("alergias.possui", "talvez"),
        ("identificacao.sexo", "xyz"),
        ("identificacao.data-nascimento", "31/02/1980"),
        ("hda.inicio", " "),
    ]:
        with pytest.raises(AnswerError):
            to_fhir_value(items[link_id], bad)


def book() -> AnswerBook:
    answers = AnswerBook(Q)
    answers.record("queixa-principal.descricao", "Dor de cabeça há três dias", ["s1", "s2"])
    answers.record("hda.intensidade", "6", ["s3"])
    answers.record("hda.intensidade", "7", ["s4"])  # a correction replaces it
    answers.record("alergias.possui", "não", ["s5"])
    answers.record("sinais-alerta.presentes", "sim", ["s6"])
    answers.record(
        "sinais-alerta.descricao", "dor no peito (orientado a ligar para o SAMU 192)", ["s6"]
    )
    return answers


def test_the_record_is_a_valid_fhir_r4_questionnaire_response_citing_its_segments() -> None:
    answers = book()
    with pytest.raises(AnswerError):
        answers.record("queixa", "x", [])  # a group, not an answerable item
    response = questionnaire_response(
        answers, status="completed", authored=NOW, dispatch_id="d-1", patient_ref="pac-7"
    )
    parsed = QuestionnaireResponse.model_validate(response)
    assert parsed.status == "completed"
    # The subject is the patient by the clinic's pseudonymous reference, never a name.
    assert response["subject"] == {"identifier": {"system": PATIENT_REF_SYSTEM, "value": "pac-7"}}
    assert response["questionnaire"] == f"{Q.url}|{Q.version}"
    assert [g["linkId"] for g in response["item"]] == [
        "queixa-principal",
        "hda",
        "alergias",
        "sinais-alerta",
    ]
    hda = response["item"][1]["item"]
    assert hda == [
        {
            "linkId": "hda.intensidade",
            "text": Q.items["hda.intensidade"].text,
            "answer": [{"valueInteger": 7}],
        }
    ]
    refs = {r.link_id: r.segment_ids for r in transcript_refs(answers)}
    assert refs["queixa-principal.descricao"] == ["s1", "s2"]
    assert refs["hda.intensidade"] == ["s4"]
    # What the scheduling service's consumer checks before storing it.
    validate_record(
        AnamnesisRecorded(
            dispatch_id="d-1",
            room="consulta-1",
            questionnaire_response=response,
            summary_pt_br=summary_pt_br(answers),
            transcript_refs=transcript_refs(answers),
            patient_ref="pac-7",
        )
    )
    empty = questionnaire_response(AnswerBook(Q), status="stopped", authored=NOW, dispatch_id="d-2")
    assert "item" not in empty and "subject" not in empty  # no patient named: no subject
    assert QuestionnaireResponse.model_validate(empty)


def test_the_summary_says_only_what_was_recorded_red_flags_first() -> None:
    summary = summary_pt_br(book())
    lines = summary.splitlines()
    assert "sem diagnóstico" in lines[0]
    assert lines[1].startswith("ATENÇÃO, sinal de alerta: Sinal de alerta: sim; Qual: dor no peito")
    assert "Queixa principal: Queixa: Dor de cabeça há três dias." in summary
    assert "Intensidade (0-10): 7" in summary and "Tem alergias: não" in summary
    assert "Nenhuma resposta" in summary_pt_br(AnswerBook(Q))


def test_the_record_answer_tool_offers_exactly_the_questionnaire_items() -> None:
    properties = RECORD_ANSWER_SCHEMA["parameters"]["properties"]  # type: ignore[index]
    assert properties["link_id"]["enum"] == list(Q.items)
    description = str(RECORD_ANSWER_SCHEMA["description"])
    assert all(link_id in description for link_id in Q.items)
    assert "tabagismo-ex" in description and "[sim/não]" in description


# -- the copilot's policy -----------------------------------------------------------------------


def test_replies_become_hints_of_a_kind_or_nothing() -> None:
    assert copilot.parse_hint("Pergunta: Há quanto tempo?") == copilot.Hint(
        "question", "Há quanto tempo?"
    )
    assert copilot.parse_hint("ALERTA: dor torácica com dispneia").kind == "red_flag"  # type: ignore[union-attr]
    assert copilot.parse_hint("Lembrete:  aferir a pressão ").text == "aferir a pressão"  # type: ignore[union-attr]
    assert copilot.parse_hint("Pergunte a intensidade, de 0 a 10.") == copilot.Hint(
        "note", "Pergunte a intensidade, de 0 a 10."
    )
    for nothing in ("", "—", " - ", "Nada.", "Pergunta: —"):
        assert copilot.parse_hint(nothing) is None


def test_at_most_one_hint_per_interval_never_the_same_twice_red_flags_wait() -> None:
    interval = timedelta(seconds=5)
    state = copilot.PolicyState()
    first = copilot.Hint("question", "Perguntar sobre febre.")
    assert copilot.decide(state, first, NOW, interval).action == "send"
    state = copilot.evolve(state, first, NOW)
    # The same words, whatever case, accents or punctuation: never again.
    again = copilot.Hint("note", "perguntar sobre FEBRE")
    assert copilot.decide(state, again, NOW + timedelta(minutes=5), interval).reason == "repeated"
    soon = copilot.Hint("question", "Perguntar sobre vômitos.")
    assert copilot.decide(state, soon, NOW + timedelta(seconds=2), interval) == copilot.Verdict(
        "drop", "too_soon"
    )
    urgent = copilot.Hint("red_flag", "Dor no peito com falta de ar.")
    held = copilot.decide(state, urgent, NOW + timedelta(seconds=2), interval)
    assert (held.action, held.at) == ("hold", NOW + interval)
    assert copilot.decide(state, soon, NOW + interval, interval).action == "send"
    assert copilot.evolve(state, soon, NOW + interval).sent == 2


# -- reception ------------------------------------------------------------------------------


def test_nothing_is_committed_before_the_patient_answered_the_proposal() -> None:
    confirmations = reception.Confirmations()
    book_it = ("book", "doctor-1", "2026-03-02T09:00:00-03:00")
    assert not confirmations.ready(book_it, turn=3)  # proposed: read it back first
    assert not confirmations.ready(book_it, turn=3)  # again in the same turn: still not
    assert confirmations.ready(book_it, turn=4)  # the patient spoke: commit
    assert not confirmations.ready(book_it, turn=5)  # a new booking is a new proposal
    other = ("book", "doctor-1", "2026-03-02T10:00:00-03:00")
    assert not confirmations.ready(other, turn=6)  # the latest proposal replaces the previous
    assert not confirmations.ready(book_it, turn=7)


def test_times_are_spoken_in_portuguese_and_must_carry_their_offset() -> None:
    moment = reception.parse_time("2026-03-03T09:30:00-03:00")
    assert reception.spoken_time(moment) == "terça-feira, 3 de março, às 9h30"
    assert reception.spoken_time(moment.replace(minute=0)) == "terça-feira, 3 de março, às 9h"
    with pytest.raises(reception.ToolError):
        reception.parse_time("2026-03-03T09:30:00")
    with pytest.raises(reception.ToolError):
        reception.parse_time("terça às 9h")


# -- avatar, vision, roles -------------------------------------------------------------------


def test_the_avatar_is_chosen_by_configuration_and_missing_keys_are_named(tmp_path: Path) -> None:
    base = stack_settings(tmp_path)
    assert avatar.choose(base, speaks=True) is None
    bey = stack_settings(tmp_path, agent_avatar="bey")
    assert avatar.choose(bey, speaks=False) is None  # a text-only role shows no face
    missing = avatar.choose(bey, speaks=True)
    assert missing == avatar.Choice(
        "bey", "missing_credentials", "BEY_API_KEY is not set: the agent speaks without an avatar"
    )
    assert avatar.choose(
        stack_settings(tmp_path, agent_avatar="tavus", tavus_api_key="k"), speaks=True
    ) == avatar.Choice("tavus")
    assert (
        avatar.choose(stack_settings(tmp_path, agent_avatar="heygen"), speaks=True).reason
        == "unknown_provider"
    )  # type: ignore[union-attr]


def test_vision_modes_follow_the_seeds_variables(tmp_path: Path) -> None:
    assert vision.enabled(stack_settings(tmp_path))
    assert not vision.streaming(stack_settings(tmp_path))
    assert vision.streaming(stack_settings(tmp_path, enable_vision_streaming=True))
    assert not vision.streaming(
        stack_settings(tmp_path, enable_vision=False, enable_vision_streaming=True)
    )


def test_the_roles_wire_the_medical_tools() -> None:
    roles = load_registry()
    for role in roles.values():
        assert all(name in TOOLS for name in role.tools), role.name
    for name in ("intake", "receptionist"):
        role = roles[name]
        assert consent.TOOL in role.tools and role.greeting == ""  # consent opens the call
        assert "raise_red_flag" in role.tools
        prompt = role.template("pt-BR")
        assert "SAMU, no 192" in prompt and "uma pergunta de cada vez" in prompt.lower()
    assert {"record_answer", "finish_intake", vision.TOOL} <= set(roles["intake"].tools)
    assert "diagnóstico" in roles["intake"].template("pt-BR")
    assert {"search_doctors", "book_appointment", "cancel_appointment"} <= set(
        roles["receptionist"].tools
    )
    hints = roles[copilot.ROLE]  # the name frontends check in the sender's mediai.role
    assert (hints.speaks, hints.text_to, hints.text_topic) == (False, ["doctor"], copilot.TOPIC)
    assert consent.TOOL not in hints.tools  # the doctor's tool: no patient consent asked
