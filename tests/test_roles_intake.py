"""The intake role with livekit-agents' test helpers (``session.run``, ``result.expect``) against
the scripted OpenAI-compatible stand-in, publishing on the stack's real NATS: consent first, the
anamnesis record built from the conversation (valid FHIR R4, stored and served by scheduling),
red flags raising the urgent event."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse

from services.agent import consent, intake
from services.agent.intake import Intake
from shared.bus import Bus
from shared.config import Settings
from shared.events.agents import AgentTranscribed
from shared.events.clinical import (
    AnamnesisRecorded,
    ConsentGiven,
    ConsentRefused,
    RedFlagRaised,
)
from shared.tenants import authenticate
from tests.roles_support import consultation, said, session_on
from tests.standin import OpenAIStandin
from tests.support import eventually, until, watch

CONSENT_PHASE = consent.PHASE_HEADING.removeprefix("## ")


@pytest.fixture
async def tenant_id(pool: asyncpg.Pool, tenant_key: str) -> str:
    tenant = await authenticate(pool, tenant_key)
    assert tenant is not None
    return tenant.id


@pytest.fixture
def standin(openai_standin: OpenAIStandin) -> OpenAIStandin:
    openai_standin.reset()
    return openai_standin


def system_of(request: dict) -> str:  # type: ignore[type-arg]
    return " ".join(
        m["content"]
        for m in request["body"]["messages"]
        if m["role"] in ("system", "developer") and isinstance(m["content"], str)
    )


async def test_consent_refused_ends_the_session_politely(
    bus: Bus, settings: Settings, tenant_id: str, standin: OpenAIStandin
) -> None:
    standin.chat(
        "prefiro falar com uma pessoa",
        system=CONSENT_PHASE,
        tool_calls=[("record_consent", {"ai_assistance": False})],
    )
    async with (
        watch(bus, ConsentRefused, ConsentGiven, tenant=tenant_id) as events,
        consultation(bus, settings, role="intake", tenant=tenant_id) as harness,
        session_on(standin, harness) as session,
    ):
        # The agent opened with who it is and the consent question, before anything clinical.
        assert said(session) == [("assistant", consent.opening("intake", recording=False))]
        result = await session.run(user_input="Não, prefiro falar com uma pessoa.")
        result.expect.next_event().is_function_call(
            name="record_consent", arguments={"ai_assistance": False}
        )
        result.expect.next_event().is_function_call_output()
        goodbye = result.expect.next_event().is_message(role="assistant")
        assert goodbye.event().item.text_content == consent.REFUSED
        result.expect.no_more_events()
        await until(lambda: harness.ended)
        assert harness.ended == [("completed", "consent_refused")]
        event = await events.next()
    # Only the consent tool existed before consent: nothing clinical could be recorded.
    first = standin.requests("chat")[0]["body"]
    assert [t["function"]["name"] for t in first["tools"]] == [
        "record_consent",
        "raise_red_flag",
        "end_conversation",
    ]
    assert CONSENT_PHASE in system_of(standin.requests("chat")[0])
    refused = event.data
    assert isinstance(refused, ConsentRefused)
    assert (refused.refused, refused.participant_identity, refused.wording) == (
        "ai_assistance",
        "patient-1",
        consent.WORDING,
    )
    user_turn = [i.id for i in session.history.items if i.type == "message" and i.role == "user"]
    assert refused.segment_ids == user_turn
    assert event.subject == harness.consultation.dispatch_id


async def served(api: httpx.AsyncClient, path: str) -> httpx.Response | None:
    """The answer once scheduling serves ``path`` (a read model in another process)."""
    answer = await api.get(path)
    return answer if answer.status_code == 200 else None


def script_intake(standin: OpenAIStandin) -> None:
    """A short anamnesis: consent, chief complaint confirmed, intensity, allergies, the end."""
    standin.chat(
        "concordo", system=CONSENT_PHASE, tool_calls=[("record_consent", {"ai_assistance": True})]
    )
    standin.chat(after_tool="record_consent", text="Obrigada! Qual é o motivo da consulta?")
    standin.chat("dor de cabeça", text="Entendi: dor de cabeça desde segunda-feira. É isso?")
    standin.chat(
        "isso mesmo",
        tool_calls=[
            (
                "record_answer",
                {
                    "link_id": "queixa-principal.descricao",
                    "answer": "Dor de cabeça desde segunda-feira",
                },
            ),
            ("record_answer", {"link_id": "hda.inicio", "answer": "segunda-feira"}),
        ],
    )
    standin.chat(
        after_tool="record_answer", once=True, text="De 0 a 10, qual é a intensidade da dor?"
    )
    standin.chat(
        "sete", tool_calls=[("record_answer", {"link_id": "hda.intensidade", "answer": "7"})]
    )
    standin.chat(after_tool="record_answer", once=True, text="Tem alergia a algum remédio?")
    standin.chat(
        "nenhuma alergia",
        tool_calls=[
            ("record_answer", {"link_id": "alergias.possui", "answer": "não"}),
            ("finish_intake", {}),
        ],
    )
    standin.chat(after_tool="*", text="Obrigada. O médico vai entrar em breve.")


async def test_the_intake_record_is_built_from_the_conversation_and_served(
    bus: Bus, settings: Settings, tenant_id: str, standin: OpenAIStandin, api: httpx.AsyncClient
) -> None:
    script_intake(standin)
    patient_ref = f"pac-{uuid.uuid4().hex[:8]}"
    async with (
        watch(bus, AnamnesisRecorded, ConsentGiven, tenant=tenant_id) as events,
        consultation(
            bus, settings, role="intake", tenant=tenant_id, patient_ref=patient_ref
        ) as harness,
        session_on(standin, harness) as session,
    ):
        result = await session.run(user_input="Sim, concordo.")
        result.expect.next_event().is_function_call(name="record_consent")
        result.expect.next_event().is_function_call_output(output=consent.GIVEN_REPLY)
        result.expect.next_event().is_message(role="assistant")
        given = await events.next()
        assert isinstance(given.data, ConsentGiven) and not given.data.recording
        assert (given.data.given_by, given.data.patient_ref) == ("patient", patient_ref)

        turns = {}
        for text in (
            "Estou com dor de cabeça desde segunda-feira.",
            "Isso mesmo.",
            "Sete.",
            "Não tenho nenhuma alergia.",
        ):
            result = await session.run(user_input=text)
            turns[text] = [
                i.id for i in session.history.items if i.type == "message" and i.role == "user"
            ][-1]
        result.expect.contains_function_call(name="finish_intake")
        assert said(session)[-1] == ("assistant", "Obrigada. O médico vai entrar em breve.")
        recorded = (await events.wait_for(lambda e: isinstance(e.data, AnamnesisRecorded))).data

    # After consent the role's own prompt and its tools (not the consent phase) were used.
    after = standin.requests("chat")[2]
    assert CONSENT_PHASE not in system_of(after) and "assistente de triagem" in system_of(after)
    assert "record_answer" in [t["function"]["name"] for t in after["body"]["tools"]]

    assert isinstance(recorded, AnamnesisRecorded)
    response = QuestionnaireResponse.model_validate(recorded.questionnaire_response)
    assert response.status == "completed"
    answers = {item.linkId: item.answer[0] for group in response.item for item in group.item}
    assert answers["queixa-principal.descricao"].valueString == "Dor de cabeça desde segunda-feira"
    assert answers["hda.intensidade"].valueInteger == 7
    assert answers["alergias.possui"].valueBoolean is False
    # Each answer cites what the patient said: the complaint and its confirmation.
    refs = {r.link_id: r.segment_ids for r in recorded.transcript_refs}
    complaint = [turns["Estou com dor de cabeça desde segunda-feira."], turns["Isso mesmo."]]
    assert refs["queixa-principal.descricao"] == complaint == refs["hda.inicio"]
    assert refs["hda.intensidade"] == [turns["Sete."]]
    assert "Queixa: Dor de cabeça desde segunda-feira" in recorded.summary_pt_br
    # The record names the dispatch's patient, in the event and as the FHIR subject.
    assert recorded.patient_ref == patient_ref and recorded.appointment_id == ""
    assert response.subject is not None and response.subject.identifier.value == patient_ref

    # Scheduling stores it from the PHI stream and serves it to the doctor, by consultation.
    dispatch_id = harness.consultation.dispatch_id
    stored = await eventually(lambda: served(api, f"/v1/consultations/{dispatch_id}/anamnesis"))
    body = stored.json()
    assert (body["dispatchId"], body["patientRef"]) == (dispatch_id, patient_ref)
    assert body["questionnaireResponse"] == recorded.questionnaire_response
    assert body["summaryPtBr"] == recorded.summary_pt_br


async def test_finishing_needs_the_chief_complaint_and_an_early_end_keeps_what_was_said(
    bus: Bus, settings: Settings, tenant_id: str, standin: OpenAIStandin
) -> None:
    standin.chat(
        "concordo", system=CONSENT_PHASE, tool_calls=[("record_consent", {"ai_assistance": True})]
    )
    standin.chat(
        "tchau",
        tool_calls=[
            ("record_answer", {"link_id": "hda.intensidade", "answer": "onze"}),
            ("record_answer", {"link_id": "alergias.possui", "answer": "sim"}),
            ("finish_intake", {}),
        ],
    )
    standin.chat(after_tool="*", text="Antes de terminar: qual é o motivo da consulta?")
    async with (
        watch(bus, AnamnesisRecorded, tenant=tenant_id) as events,
        consultation(bus, settings, role="intake", tenant=tenant_id) as harness,
        session_on(standin, harness) as session,
    ):
        await session.run(user_input="Concordo.")
        result = await session.run(user_input="Tenho alergia, tchau.")
        outputs = [e.item for e in result.events if e.type == "function_call_output"]
        assert [o.is_error for o in outputs] == [True, False, True]
        assert "número inteiro" in outputs[0].output
        assert "falta registrar" in outputs[2].output
        # The patient leaves: the session's end publishes what was collected, as stopped.
        harness.consultation.part(Intake).close()
        recorded = (await events.next()).data
    assert isinstance(recorded, AnamnesisRecorded)
    assert recorded.questionnaire_response["status"] == "stopped"
    assert QuestionnaireResponse.model_validate(recorded.questionnaire_response)
    assert [r.link_id for r in recorded.transcript_refs] == ["alergias.possui"]


async def test_a_red_flag_tells_the_patient_to_call_samu_and_raises_the_urgent_event(
    bus: Bus, settings: Settings, tenant_id: str, standin: OpenAIStandin
) -> None:
    standin.chat(
        "concordo", system=CONSENT_PHASE, tool_calls=[("record_consent", {"ai_assistance": True})]
    )
    standin.chat(
        "no peito",
        tool_calls=[
            (
                "raise_red_flag",
                {"category": "chest_pain_dyspnea", "description": "dor no peito com falta de ar"},
            )
        ],
    )
    async with (
        watch(bus, RedFlagRaised, tenant=tenant_id) as events,
        consultation(
            bus, settings, role="intake", tenant=tenant_id, patient="patient-9"
        ) as harness,
        session_on(standin, harness) as session,
    ):
        await session.run(user_input="Concordo.")
        result = await session.run(
            user_input="Estou com uma dor forte no peito e muita falta de ar agora."
        )
        result.expect.next_event().is_function_call(
            name="raise_red_flag", arguments={"category": "chest_pain_dyspnea"}
        )
        result.expect.next_event().is_function_call_output()
        urgent = result.expect.next_event().is_message(role="assistant")
        assert urgent.event().item.text_content == intake.URGENT
        assert "SAMU, no 192" in intake.URGENT
        result.expect.no_more_events()  # fixed words: the model adds nothing of its own
        event = await events.next()
        book = harness.consultation.part(Intake).book
    raised = event.data
    assert isinstance(raised, RedFlagRaised)
    assert (raised.category, raised.participant_identity) == ("chest_pain_dyspnea", "patient-9")
    assert (
        raised.segment_ids
        == [i.id for i in session.history.items if i.type == "message" and i.role == "user"][-1:]
    )
    assert book.answers["sinais-alerta.presentes"].value == {"valueBoolean": True}
    assert "SAMU 192" in book.answers["sinais-alerta.descricao"].spoken


@pytest.mark.livekit
async def test_through_the_worker_consent_comes_first_and_an_early_end_keeps_the_record(
    api: httpx.AsyncClient, bus: Bus, openai_standin: OpenAIStandin, tenant_id: str
) -> None:
    """The real worker, a real room, real speech: the consent question is the first thing the
    patient hears; after consent an answer is recorded; ending the dispatch publishes it. The
    dispatch's patientRef reaches the agent through the job metadata: its transcripts, consent
    and record name that patient, and the record is served by the dispatch."""
    from tests.test_agent_e2e import (
        OPENAI,
        Participant,
        dispatch,
        registered_workers,
        speech,
        state_of,
    )

    await registered_workers(bus)
    standin = openai_standin
    standin.reset()
    standin.transcripts("Sim, concordo.", "Estou com dor de cabeça desde segunda-feira.")
    standin.chat(
        "concordo", system=CONSENT_PHASE, tool_calls=[("record_consent", {"ai_assistance": True})]
    )
    standin.chat(after_tool="record_consent", text="Obrigada. Qual é o motivo da consulta?")
    standin.chat(
        "dor de cabeça",
        tool_calls=[
            (
                "record_answer",
                {"link_id": "queixa-principal.descricao", "answer": "dor de cabeça desde segunda"},
            )
        ],
    )
    standin.chat(after_tool="record_answer", text="Entendi. De 0 a 10, quanto dói?")
    room = f"consulta-{uuid.uuid4().hex[:8]}"
    patient = await Participant.join(api, room, f"patient-{uuid.uuid4().hex[:6]}")
    patient_ref = f"pac-{uuid.uuid4().hex[:8]}"
    async with (
        watch(bus, AgentTranscribed, tenant=tenant_id) as transcripts,
        watch(bus, ConsentGiven, AnamnesisRecorded, tenant=tenant_id) as events,
    ):
        created = await dispatch(api, room=room, role="intake", patientRef=patient_ref, **OPENAI)
        assert created["patientRef"] == patient_ref
        await until(lambda: standin.requests("speech"), 30)
        assert standin.requests("speech")[0]["body"]["input"].startswith(
            consent.INTRO.split(":")[0]
        )
        agent = (await state_of(api, created["id"], "joined"))["agentIdentity"]
        pcm, rate = speech()
        # A short silence after speaking (enough for the VAD to end the turn) so the microphone
        # is free again before the patient's next answer.
        spoke = await patient.say(pcm, rate, silence_after=1.0)
        given = (await events.next(timeout=30)).data
        assert isinstance(given, ConsentGiven)
        assert given.participant_identity == patient.identity and given.segment_ids
        assert (given.patient_ref, given.given_by) == (patient_ref, "patient")
        await until(
            lambda: any(
                "Qual é o motivo" in r["body"]["input"] for r in standin.requests("speech")
            ),
            30,
        )
        await patient.wait_for_voice(spoke, agent)
        await patient.say(pcm, rate, silence_after=1.0)
        replies = lambda: [  # noqa: E731
            (r.get("reply") or {}).get("text") or "" for r in standin.requests("chat")
        ]
        await until(lambda: "Entendi. De 0 a 10, quanto dói?" in replies(), 30)
        assert (await api.delete(f"/v1/agents/{created['id']}")).status_code == 202
        recorded = (await events.next(timeout=30)).data
        said_in_room = [e.data for e in transcripts.drain()]
    await patient.leave()
    assert isinstance(recorded, AnamnesisRecorded)
    assert recorded.questionnaire_response["status"] == "stopped"
    assert [r.link_id for r in recorded.transcript_refs] == ["queixa-principal.descricao"]
    assert recorded.transcript_refs[0].segment_ids != given.segment_ids
    assert (recorded.dispatch_id, recorded.patient_ref) == (created["id"], patient_ref)
    # Both sides of the conversation were transcribed, each segment naming the patient.
    ours = [t for t in said_in_room if t.dispatch_id == created["id"]]
    assert {t.speaker for t in ours} == {"user", "agent"}
    assert {t.patient_ref for t in ours} == {patient_ref}
    stored = await eventually(lambda: served(api, f"/v1/consultations/{created['id']}/anamnesis"))
    assert stored.json()["patientRef"] == patient_ref
