"""The intake role's tools: answers recorded as the patient gives them (each citing the transcript
segments it came from), urgent red flags, and the finished record as an ``AnamnesisRecorded``.

The record itself (FHIR R4 QuestionnaireResponse, summary) is built by the pure
``intake_record`` module; here are the session's state and what the model calls.
"""

from __future__ import annotations

from typing import Any, Literal

from livekit.agents import RunContext, function_tool
from livekit.agents.llm import ToolError, ToolResult

from services.agent.consultation import Consultation, consultation_of, speak, utcnow
from services.agent.intake_record import (
    AnswerBook,
    AnswerError,
    Questionnaire,
    load_questionnaire,
    questionnaire_response,
    summary_pt_br,
    transcript_refs,
)
from shared.events.clinical import AnamnesisRecorded, RedFlagRaised

QUESTIONNAIRE: Questionnaire = load_questionnaire()
REQUIRED = ("queixa-principal.descricao",)

RedFlag = Literal[
    "chest_pain_dyspnea",
    "stroke_signs",
    "suicidal_ideation",
    "severe_bleeding",
    "loss_of_consciousness",
    "severe_breathing_difficulty",
    "anaphylaxis",
    "other",
]
# Fixed words for an emergency (reviewed text, never improvised by the model).
URGENT = (
    "Isso pode ser uma emergência. Ligue agora para o SAMU, no 192, ou vá ao pronto-socorro "
    "mais próximo. Se puder, peça ajuda a alguém perto de você. Já avisei a equipe da "
    "clínica."
)
URGENT_SUICIDE = (
    "Obrigada por me contar, você não está sozinho. Se você estiver em perigo agora, "
    "ligue para o SAMU, no 192. Você também pode ligar para o CVV, no 188, a "
    "qualquer hora, de graça. Já avisei a equipe da clínica."
)
AFTER_URGENT = (
    "A orientação de emergência já foi dita ao paciente e a clínica foi avisada. Não "
    "faça diagnóstico. Se o paciente continuar falando, responda com calma e reforce "
    "que ligue para o SAMU, no 192."
)


class Intake:
    """One session's anamnesis: the answer book and which segments answers already cite."""

    def __init__(self, consultation: Consultation) -> None:
        self.consultation = consultation
        self.book = AnswerBook(QUESTIONNAIRE)
        self.finished = False
        self._window: list[str] = []

    def sources(self) -> list[str]:
        """The patient's segments an answer recorded now comes from: what they said since the
        previous answer was recorded (the answer and its confirmation); answers recorded
        together from one reply share it."""
        new = self.consultation.transcript.take_uncited()
        if new:
            self._window = new
        return list(self._window)

    def record(self, status: str) -> AnamnesisRecorded:
        c = self.consultation
        return AnamnesisRecorded(
            dispatch_id=c.dispatch_id,
            room=c.room,
            questionnaire_response=questionnaire_response(
                self.book,
                status=status,
                authored=utcnow(),
                dispatch_id=c.dispatch_id,
                patient_ref=c.patient_ref,
            ),
            summary_pt_br=summary_pt_br(self.book),
            transcript_refs=transcript_refs(self.book),
            patient_ref=c.patient_ref,
            appointment_id=c.appointment_id,
        )

    def close(self) -> None:
        """At the end of a session that stopped before the record was finished: what was
        collected is still the doctor's, marked ``stopped`` (FHIR: abandoned part-way)."""
        if not self.finished and self.book.answers:
            self.finished = True
            self.consultation.emit(self.record("stopped"))


def _item_lines() -> str:
    lines = []
    for item in QUESTIONNAIRE.items.values():
        hint = {
            "boolean": " [sim/não]",
            "integer": " [número inteiro]",
            "date": " [AAAA-MM-DD]",
        }.get(item.type, "")
        if item.type == "choice":
            hint = " [" + " | ".join(o["code"] for o in item.options) + "]"
        lines.append(f"- {item.link_id}: {item.text}{hint}")
    return "\n".join(lines)


RECORD_ANSWER_SCHEMA = {
    "name": "record_answer",
    "description": (
        "Registra no prontuário uma resposta do paciente, depois que você confirmou com ele o "
        "que entendeu. Use as palavras do paciente, sem interpretar nem diagnosticar. Registrar "
        "de novo o mesmo item substitui a resposta anterior (uma correção). Itens:\n"
        + _item_lines()
    ),
    "parameters": {
        "type": "object",
        "properties": {
            "link_id": {
                "type": "string",
                "enum": list(QUESTIONNAIRE.items),
                "description": "O item do questionário que esta resposta responde.",
            },
            "answer": {
                "type": "string",
                "description": "A resposta, com as palavras do paciente (ou o valor "
                "pedido entre colchetes).",
            },
        },
        "required": ["link_id", "answer"],
        "additionalProperties": False,
    },
}


@function_tool(raw_schema=RECORD_ANSWER_SCHEMA)
async def record_answer(raw_arguments: dict[str, object], context: RunContext[Any]) -> str:
    intake = consultation_of(context).part(Intake)
    if intake.finished:
        raise ToolError("A anamnese já foi concluída e enviada ao médico.")
    link_id, answer = str(raw_arguments.get("link_id", "")), str(raw_arguments.get("answer", ""))
    try:
        intake.book.record(link_id, answer, intake.sources())
    except AnswerError as error:
        raise ToolError(str(error)) from None
    missing = [k for k in REQUIRED if k not in intake.book.answers]
    return "Registrado." + (" Ainda falta a queixa principal." if missing else "")


@function_tool
async def finish_intake(context: RunContext[Any]) -> str:
    """Conclui a anamnese e envia o registro ao médico. Chame só no fim, depois de cobrir os
    assuntos do roteiro que se aplicam e de perguntar se o paciente quer acrescentar algo."""
    consultation = consultation_of(context)
    intake = consultation.part(Intake)
    if intake.finished:
        return "O registro já foi enviado ao médico."
    missing = [QUESTIONNAIRE.items[k].text for k in REQUIRED if k not in intake.book.answers]
    if missing:
        raise ToolError("Ainda não dá para concluir: falta registrar " + "; ".join(missing))
    intake.finished = True
    consultation.emit(intake.record("completed"))
    return (
        "Registro enviado ao médico. Agradeça, diga que o médico vai entrar em breve e despeça-se."
    )


@function_tool
async def raise_red_flag(
    context: RunContext[Any], category: RedFlag, description: str
) -> ToolResult:
    """Use IMEDIATAMENTE quando o paciente relatar um sinal de emergência: dor no peito com falta
    de ar, sinais de AVC (boca torta, fraqueza ou dormência de um lado do corpo, fala enrolada),
    falta de ar intensa, desmaio, sangramento intenso, reação alérgica grave, ou pensamentos de
    se machucar ou de suicídio. A ferramenta diz ao paciente o que fazer agora (SAMU 192) e avisa
    a clínica com urgência; não repita a orientação nem faça diagnóstico.

    Args:
        category: o tipo de sinal de alerta (other se nenhum se aplica).
        description: em poucas palavras, o que o paciente relatou.
    """
    consultation = consultation_of(context)
    segments = consultation.transcript.last_turn()
    consultation.emit(
        RedFlagRaised(
            **consultation.ids(),
            participant_identity=consultation.patient(),
            category=category,
            description=description.strip()[:500],
            segment_ids=segments,
            raised_at=utcnow(),
            patient_ref=consultation.patient_ref,
        )
    )
    if "record_answer" in consultation.role.tools:
        intake = consultation.part(Intake)
        sources = intake.sources()
        intake.book.record("sinais-alerta.presentes", "sim", sources)
        said = "ligar para o SAMU 192" + (" e CVV 188" if category == "suicidal_ideation" else "")
        intake.book.record(
            "sinais-alerta.descricao", f"{description.strip()[:400]} (orientado a {said})", sources
        )
    speak(
        context.session,
        URGENT_SUICIDE if category == "suicidal_ideation" else URGENT,
        allow_interruptions=False,
    )
    return ToolResult(AFTER_URGENT, reply_required=False)
