"""Consent first: a patient-facing role asks, before anything clinical, to be assisted by an AI
(and, when the room is recorded, to the recording); the answer is an event; no means goodbye.

A role is patient-facing when its ``role.toml`` lists the ``record_consent`` tool. Until the
patient agrees, its agent runs with the consent-phase instructions below and only the tools that
are safe without consent (``record_consent``; ``raise_red_flag`` and ``end_conversation`` when
the role has them: telling someone to call SAMU needs no consent). The wording is fixed text,
versioned (``WORDING``), so the event says exactly what the patient was asked.

For a patient the clinic dispatched as a minor (``patientIsMinor``) consent is the guardian's to
give (ECA and LGPD Art. 14): the agent addresses the guardian with the guardian's wording
(``GUARDIAN_WORDING``), and the event says the guardian consented, and as what relation.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args, runtime_checkable

from livekit.agents import RunContext, function_tool
from livekit.agents.llm import ToolError

from services.agent.consultation import Consultation, consultation_of, speak, utcnow
from shared.events.clinical import ConsentGiven, ConsentRefused

log = logging.getLogger(__name__)

TOOL = "record_consent"
# Tools a patient-facing role may use before consent (when the role has them).
BEFORE_CONSENT = ("record_consent", "raise_red_flag", "end_conversation")
WORDING = "consent-pt-BR-2026-01"
GUARDIAN_WORDING = "consent-guardian-pt-BR-2026-01"
# What the guardian of a minor said they are (the event's ``guardian_relation``).
GuardianRelation = Literal["mother", "father", "grandparent", "legal_guardian", "other"]
GUARDIAN_RELATIONS: tuple[str, ...] = get_args(GuardianRelation)

PURPOSES = {
    "intake": "Vou fazer algumas perguntas sobre a sua saúde para adiantar a sua consulta com "
    "o médico.",
    "receptionist": "Posso ajudar você a encontrar um médico e a marcar, remarcar ou cancelar "
    "consultas.",
}
INTRO = (
    "Olá! Eu sou a assistente virtual da clínica, um programa de inteligência artificial: "
    "não sou uma pessoa nem sou médica."
)
ASK = "Você concorda em ser atendido por uma assistente virtual?"
ASK_WITH_RECORDING = (
    "Esta conversa está sendo gravada. Você concorda em ser atendido por uma "
    "assistente virtual e com a gravação?"
)
REFUSED = (
    "Tudo bem, respeito a sua decisão. Sem a sua concordância eu não posso continuar o "
    "atendimento. A equipe da clínica pode atender você diretamente. Obrigada, até logo!"
)
RECORDING_REFUSED = (
    "Tudo bem, respeito a sua decisão. Como esta conversa está sendo gravada, "
    "não posso continuar sem a sua concordância. A equipe da clínica pode atender "
    "você de outra forma. Obrigada, até logo!"
)

# The guardian's wording: the same facts, addressed to the adult responsible for a minor.
GUARDIAN_PURPOSES = {
    "intake": "Vou fazer algumas perguntas sobre a saúde do(a) paciente para adiantar a "
    "consulta com o médico.",
    "receptionist": "Posso ajudar a encontrar um médico e a marcar, remarcar ou cancelar "
    "consultas do(a) paciente.",
}
GUARDIAN_ASK = (
    "Como o(a) paciente é menor de idade, preciso da autorização do(a) responsável. "
    "O(a) responsável pelo(a) paciente autoriza o atendimento por uma assistente virtual?"
)
GUARDIAN_ASK_WITH_RECORDING = (
    "Esta conversa está sendo gravada. Como o(a) paciente é menor de idade, preciso da "
    "autorização do(a) responsável. O(a) responsável pelo(a) paciente autoriza o atendimento "
    "por uma assistente virtual e a gravação?"
)
GUARDIAN_REFUSED = (
    "Tudo bem, respeito a decisão. Sem a autorização do(a) responsável eu não posso continuar "
    "o atendimento. A equipe da clínica pode atender vocês diretamente. Obrigada, até logo!"
)
GUARDIAN_RECORDING_REFUSED = (
    "Tudo bem, respeito a decisão. Como esta conversa está sendo gravada, não posso continuar "
    "sem a autorização do(a) responsável. A equipe da clínica pode atender vocês de outra "
    "forma. Obrigada, até logo!"
)
GIVEN_REPLY = (
    "Consentimento registrado. Agradeça em poucas palavras e comece o atendimento "
    "seguindo as suas instruções, com uma pergunta de cada vez."
)

PHASE_HEADING = "## Agora: consentimento"


def opening(role: str, *, recording: bool, guardian: bool = False) -> str:
    """What the agent says first: who it is, what for, and the consent question (asked of the
    guardian when the patient is a minor)."""
    if guardian:
        ask = GUARDIAN_ASK_WITH_RECORDING if recording else GUARDIAN_ASK
        parts = [INTRO, GUARDIAN_PURPOSES.get(role, ""), ask]
    else:
        parts = [INTRO, PURPOSES.get(role, ""), ASK_WITH_RECORDING if recording else ASK]
    return " ".join(p for p in parts if p)


def goodbye(refused: str, *, guardian: bool = False) -> str:
    """The fixed words said to whoever refused (``refused``: what was refused)."""
    if refused == "recording":
        return GUARDIAN_RECORDING_REFUSED if guardian else RECORDING_REFUSED
    return GUARDIAN_REFUSED if guardian else REFUSED


def phase_instructions(instructions: str, *, recording: bool, guardian: bool = False) -> str:
    """The role's instructions while consent is pending: the same role, one task for now."""
    if guardian:
        return _guardian_phase(instructions, recording=recording)
    what = "e com a gravação desta conversa" if recording else ""
    return f"""{instructions}

{PHASE_HEADING}

Você já se apresentou e perguntou ao paciente se ele concorda em ser atendido por uma assistente
virtual {what}. Ainda não comece o atendimento: não faça perguntas de saúde nem ofereça serviços.
- Espere a resposta e chame a ferramenta {TOOL} com o que o paciente decidiu.
- Se ele tiver dúvidas, explique em poucas palavras que você é um programa de inteligência
  artificial da clínica, que o que ele disser fica registrado para a equipe da clínica e o médico,
  e que ele pode preferir ser atendido por uma pessoa. Depois pergunte de novo.
- Se a resposta não for clara, pergunte de novo; não presuma um sim.
- Se ele relatar um sinal de emergência, oriente-o a ligar agora para o SAMU, no 192.""".strip()


def _guardian_phase(instructions: str, *, recording: bool) -> str:
    what = "e a gravação desta conversa" if recording else ""
    return f"""{instructions}

{PHASE_HEADING}

O paciente é menor de idade: quem autoriza é o(a) responsável por ele(a). Você já se apresentou
e perguntou se o(a) responsável autoriza o atendimento por uma assistente virtual {what}. Ainda
não comece o atendimento: não faça perguntas de saúde nem ofereça serviços.
- Só o(a) responsável pode autorizar. Se quem responde disser que não é o(a) responsável (por
  exemplo, o próprio paciente), peça com gentileza que chame o(a) responsável e espere; não
  registre a resposta de outra pessoa.
- Quando o(a) responsável responder, chame a ferramenta {TOOL} com a decisão e, se ele(a)
  disse, o parentesco com o paciente (guardian_relation).
- Se houver dúvidas, explique em poucas palavras que você é um programa de inteligência
  artificial da clínica, que o que for dito fica registrado para a equipe da clínica e o médico,
  e que o(a) responsável pode preferir o atendimento por uma pessoa. Depois pergunte de novo.
- Se a resposta não for clara, pergunte de novo; não presuma um sim.
- Se alguém relatar um sinal de emergência, oriente a ligar agora para o SAMU, no 192.""".strip()


# -- the pure core ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    given: bool
    # What was refused when not given: "ai_assistance" or "recording".
    refused: Literal["", "ai_assistance", "recording"] = ""


def decide(*, ai_assistance: bool, recording_asked: bool, recording: bool | None) -> Decision:
    """Consent is given only to everything that was asked; an unanswered recording question
    (None) counts as not agreed, so the agent asks again instead of presuming."""
    if not ai_assistance:
        return Decision(given=False, refused="ai_assistance")
    if recording_asked and recording is not True:
        return Decision(given=False, refused="recording")
    return Decision(given=True)


# -- the session's consent state and the tool ---------------------------------------------------


@runtime_checkable
class Gated(Protocol):
    """The agent a consent gate opens (medical.ClinicalAgent)."""

    async def open_consultation(self) -> None: ...


class ConsentGate:
    """One consultation's consent: pending until the patient answers, then given or refused."""

    def __init__(self, consultation: Consultation) -> None:
        self.consultation = consultation
        self.status: Literal["pending", "given", "refused"] = "pending"
        self.recording_asked = False
        self._ending: asyncio.Task[None] | None = None

    @property
    def required(self) -> bool:
        return TOOL in self.consultation.role.tools

    @property
    def open(self) -> bool:
        """Whether the clinical conversation may happen (consent given, or not required)."""
        return self.status == "given" or not self.required

    @property
    def guardian(self) -> bool:
        """Whether consent is the guardian's to give (the clinic dispatched for a minor)."""
        return self.consultation.patient_is_minor

    @property
    def wording(self) -> str:
        return GUARDIAN_WORDING if self.guardian else WORDING

    def ask(self) -> str:
        """The opening to say now; remembers whether it covered a recording."""
        room = self.consultation.rtc_room
        self.recording_asked = bool(room is not None and room.is_recording)
        return opening(
            self.consultation.role.name, recording=self.recording_asked, guardian=self.guardian
        )

    def phase_instructions(self, instructions: str, *, recording: bool) -> str:
        return phase_instructions(instructions, recording=recording, guardian=self.guardian)


@function_tool(name=TOOL)
async def record_consent(
    context: RunContext[Any],
    ai_assistance: bool,
    recording: bool | None = None,
    guardian_relation: GuardianRelation | None = None,
) -> str | None:
    """Registra a resposta ao pedido de consentimento: a do paciente ou, se o paciente é menor de
    idade, a do(a) responsável. Chame assim que a resposta for clara; se for ambígua, pergunte
    de novo antes de chamar.

    Args:
        ai_assistance: true se concorda com o atendimento por uma assistente virtual.
        recording: true se concorda com a gravação (somente quando a gravação foi mencionada).
        guardian_relation: só para paciente menor de idade, se o(a) responsável disse: mother
            (mãe), father (pai), grandparent (avó ou avô), legal_guardian (tutor ou guardião
            legal) ou other (outro responsável).
    """
    consultation = consultation_of(context)
    gate = consultation.part(ConsentGate)
    if gate.status == "given":
        return "O consentimento já foi registrado; continue o atendimento."
    if gate.status == "refused":
        raise ToolError("O paciente já recusou; apenas se despeça.")
    decision = decide(
        ai_assistance=ai_assistance, recording_asked=gate.recording_asked, recording=recording
    )
    segments = consultation.transcript.last_turn()
    consultation.transcript.cite(segments)  # the answer to consent is no clinical answer
    answered_by = "guardian" if gate.guardian else "patient"
    common: dict[str, Any] = {
        **consultation.ids(),
        "participant_identity": consultation.patient(),
        "recording": gate.recording_asked,
        "wording": gate.wording,
        "segment_ids": segments,
        "patient_ref": consultation.patient_ref,
        "guardian_relation": (guardian_relation or "") if gate.guardian else "",
    }
    if decision.given:
        gate.status = "given"
        consultation.emit(
            ConsentGiven(**common, ai_assistance=True, given_by=answered_by, given_at=utcnow())
        )
        agent = context.session.current_agent
        if isinstance(agent, Gated):  # the clinical instructions and tools, from now on
            await agent.open_consultation()
        return GIVEN_REPLY
    gate.status = "refused"
    consultation.emit(
        ConsentRefused(
            **common, refused=decision.refused, refused_by=answered_by, refused_at=utcnow()
        )
    )
    # Fixed words, not the model's: what is said to someone who refused is reviewed text.
    words = goodbye(decision.refused, guardian=gate.guardian)
    handle = speak(context.session, words, allow_interruptions=False)
    gate._ending = asyncio.create_task(
        _end_after(handle, consultation), name="mediai-consent-refused"
    )
    return None  # nothing for the model to add: the goodbye is said


async def _end_after(handle: Any, consultation: Consultation) -> None:
    try:
        await handle.wait_for_playout()
    finally:
        consultation.finish("completed", "consent_refused")
