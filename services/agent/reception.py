"""The receptionist's tools: find doctors and free slots, and book, move or cancel appointments
through the scheduling service (NATS request/reply, ``shared.scheduling_api``).

Nothing is committed before the patient confirmed it: the first call of a committing tool only
proposes (the model reads the details back and asks); the same call again, after the patient
has spoken, commits. Failures are ``ToolError``s in pt-BR that the model can explain.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from livekit.agents import RunContext, function_tool
from livekit.agents.llm import ToolError

from services.agent.consultation import Consultation, consultation_of
from shared import scheduling_api as sched
from shared.naming import is_patient_ref

WEEKDAYS = (
    "segunda-feira",
    "terça-feira",
    "quarta-feira",
    "quinta-feira",
    "sexta-feira",
    "sábado",
    "domingo",
)
MONTHS = (
    "janeiro",
    "fevereiro",
    "março",
    "abril",
    "maio",
    "junho",
    "julho",
    "agosto",
    "setembro",
    "outubro",
    "novembro",
    "dezembro",
)
ERRORS = {
    "slot_taken": "Esse horário acabou de ser ocupado por outra pessoa. Peça desculpas e "
    "ofereça outro horário.",
    "slot_unavailable": "Esse horário não está na agenda do médico (fora do expediente, no "
    "passado ou longe demais). Consulte os horários livres com next_slots.",
    "doctor_not_found": "Não encontrei esse médico. Busque de novo com search_doctors.",
    "appointment_not_found": "Não encontrei essa consulta entre as deste paciente. Veja as "
    "consultas dele com find_appointments.",
    "appointment_cancelled": "Essa consulta já foi cancelada e não pode ser remarcada; ofereça "
    "marcar uma nova.",
    "invalid_request": "Os dados estão incompletos ou em formato errado. Confira o médico e o "
    "horário (copie starts_at exatamente como veio da lista) e tente de novo.",
    "unavailable": "A agenda da clínica não está respondendo agora. Peça desculpas e sugira "
    "tentar de novo em alguns minutos ou falar com a equipe da clínica.",
}


def spoken_time(moment: datetime) -> str:
    """``2026-03-02T09:30-03:00`` -> "segunda-feira, 2 de março, às 9h30" (the doctor's zone)."""
    minutes = f"{moment.minute:02d}" if moment.minute else ""
    return (
        f"{WEEKDAYS[moment.weekday()]}, {moment.day} de {MONTHS[moment.month - 1]}, "
        f"às {moment.hour}h{minutes}"
    )


def slot_line(slot: sched.Slot) -> str:
    return f"{spoken_time(slot.starts_at)} (starts_at={slot.starts_at.isoformat()})"


def doctor_line(doctor: sched.Doctor) -> str:
    insurances = ", ".join(doctor.insurances) or "particular"
    line = (
        f"{doctor.name} (doctor_id={doctor.id}), {doctor.specialty}, {doctor.city}; "
        f"convênios: {insurances}"
    )
    return line + (
        f"; próximo horário: {slot_line(doctor.next_slot)}"
        if doctor.next_slot
        else "; sem horário livre nos próximos 90 dias"
    )


def parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ToolError(
            "Use o horário exatamente como veio da lista, com o fuso (por exemplo "
            "2026-03-02T09:00:00-03:00)."
        )
    return moment


class SchedulingToolError(ToolError):
    """A scheduling failure, explained for the model; ``code`` is scheduling's error code."""

    def __init__(self, code: str) -> None:
        super().__init__(ERRORS.get(code, ERRORS["unavailable"]))
        self.code = code


# -- confirmation before committing (pure) -----------------------------------------------------


@dataclass
class Confirmations:
    """Proposals waiting for the patient's answer, by what they would do."""

    proposed: dict[tuple[str, ...], int] = field(default_factory=dict)

    def ready(self, action: tuple[str, ...], turn: int) -> bool:
        """True when ``action`` was proposed before the patient's latest turn (they heard it
        and answered); otherwise it becomes the proposal and False."""
        if action in self.proposed and self.proposed[action] < turn:
            del self.proposed[action]
            return True
        self.proposed = {action: turn}  # one proposal at a time: the latest one
        return False


class Desk:
    """One session's reception desk: the proposals and how to reach scheduling."""

    def __init__(self, consultation: Consultation) -> None:
        self.consultation = consultation
        self.confirmations = Confirmations()

    def patient_ref(self) -> str:
        """Whom the desk books for: the dispatch's patient (``patientRef``) when it named one,
        whoever is on the call (a guardian booking for a child, say); otherwise, as before
        dispatches named patients, the identity of the person on the call."""
        if self.consultation.patient_ref:
            return self.consultation.patient_ref
        identity = self.consultation.patient()
        if not identity or not is_patient_ref(identity):
            raise ToolError(
                "Não consegui identificar o paciente nesta chamada; peça que ele "
                "fale com a equipe da clínica para marcar."
            )
        return identity

    def confirmed(self, *action: str) -> bool:
        turn = len(self.consultation.transcript.user_segments())
        return self.confirmations.ready(tuple(action), turn)

    async def call(self, request: sched.Request[Any]) -> Any:
        if self.consultation.nc is None:
            raise SchedulingToolError("unavailable")
        try:
            return await sched.call(self.consultation.nc, request)
        except sched.SchedulingRequestError as error:
            raise SchedulingToolError(error.code) from None


def _desk(context: RunContext[Any]) -> Desk:
    return consultation_of(context).part(Desk)


def _request_id(*parts: str) -> str:
    # The same booking asked twice in one consultation is one booking (a retry, or the model
    # calling again after success), never a "slot taken" against itself.
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:40]


@function_tool
async def search_doctors(
    context: RunContext[Any],
    specialty: str | None = None,
    name: str | None = None,
    city: str | None = None,
    insurance: str | None = None,
    within_days: int | None = None,
) -> str:
    """Busca médicos da clínica. Preencha só o que o paciente disse.

    Args:
        specialty: especialidade, como a clínica escreve (ex.: Cardiologia, Dermatologia).
        name: parte do nome do médico.
        city: cidade.
        insurance: convênio (ex.: Unimed).
        within_days: só médicos com horário livre nos próximos N dias.
    """
    desk = _desk(context)
    now = datetime.now(UTC)
    found: sched.SearchDoctorsReply = await desk.call(
        sched.SearchDoctorsRequest(
            dispatch_id=desk.consultation.dispatch_id,
            specialty=specialty or None,
            name=name or None,
            city=city or None,
            insurance=insurance or None,
            available_from=now if within_days else None,
            available_until=now + timedelta(days=within_days) if within_days else None,
        )
    )
    if not found.doctors:
        known = ", ".join(found.known_specialties) or "nenhuma cadastrada"
        return f"Nenhum médico encontrado com esses critérios. Especialidades da clínica: {known}."
    return "Médicos encontrados:\n" + "\n".join(f"- {doctor_line(d)}" for d in found.doctors)


@function_tool
async def next_slots(context: RunContext[Any], doctor_id: str, after: str | None = None) -> str:
    """Os próximos horários livres de um médico.

    Args:
        doctor_id: o doctor_id vindo de search_doctors.
        after: só horários a partir deste momento (ISO com fuso), se o paciente pediu um dia.
    """
    desk = _desk(context)
    reply: sched.NextSlotsReply = await desk.call(
        sched.NextSlotsRequest(
            dispatch_id=desk.consultation.dispatch_id,
            doctor_id=doctor_id,
            after=parse_time(after) if after else None,
            limit=5,
        )
    )
    if not reply.slots:
        return f"{reply.doctor.name} não tem horário livre nesse período."
    return f"Horários livres de {reply.doctor.name}:\n" + "\n".join(
        f"- {slot_line(s)}" for s in reply.slots
    )


@function_tool
async def book_appointment(
    context: RunContext[Any],
    doctor_id: str,
    starts_at: str,
    patient_name: str | None = None,
    reason: str | None = None,
) -> str:
    """Agenda uma consulta. Na primeira chamada nada é marcado: você recebe os detalhes para ler
    ao paciente e pedir confirmação. Quando ele confirmar, chame de novo com os mesmos dados.

    Args:
        doctor_id: o doctor_id do médico.
        starts_at: o starts_at exato de um horário livre (ISO com fuso).
        patient_name: o nome do paciente, se ele disse.
        reason: o motivo da consulta em poucas palavras, se ele disse.
    """
    desk = _desk(context)
    moment = parse_time(starts_at)
    if not desk.confirmed("book", doctor_id, moment.isoformat()):
        return (
            f"Ainda não agendado. Leia ao paciente: consulta em {spoken_time(moment)}, com o "
            "médico escolhido, e pergunte se confirma. Se confirmar, chame book_appointment "
            "de novo com os mesmos dados."
        )
    c = desk.consultation
    try:
        booked: sched.AppointmentReply = await desk.call(
            sched.BookRequest(
                dispatch_id=c.dispatch_id,
                doctor_id=doctor_id,
                starts_at=moment,
                patient_ref=desk.patient_ref(),
                patient_name=(patient_name or "").strip()[:200] or None,
                reason=(reason or "").strip()[:500] or None,
                room=c.room,
                request_id=_request_id(c.dispatch_id, doctor_id, moment.isoformat()),
            )
        )
    except SchedulingToolError as error:
        if error.code != "slot_taken":
            raise
        raise ToolError(f"{error.message} {await _free_slots(desk, doctor_id)}") from None
    a = booked.appointment
    return (
        f"Agendado: {a.doctor_name} ({a.specialty}), {spoken_time(a.starts_at)} "
        f"(appointment_id={a.id}). Confirme ao paciente."
    )


async def _free_slots(desk: Desk, doctor_id: str) -> str:
    try:
        reply: sched.NextSlotsReply = await desk.call(
            sched.NextSlotsRequest(
                dispatch_id=desk.consultation.dispatch_id, doctor_id=doctor_id, limit=3
            )
        )
    except ToolError:
        return ""
    if not reply.slots:
        return "Não há outros horários livres com esse médico nos próximos dias."
    return "Horários livres agora: " + "; ".join(slot_line(s) for s in reply.slots) + "."


@function_tool
async def find_appointments(context: RunContext[Any]) -> str:
    """As próximas consultas marcadas deste paciente (para remarcar ou cancelar)."""
    desk = _desk(context)
    found: sched.FindAppointmentsReply = await desk.call(
        sched.FindAppointmentsRequest(
            dispatch_id=desk.consultation.dispatch_id, patient_ref=desk.patient_ref()
        )
    )
    if not found.appointments:
        return "Este paciente não tem consultas marcadas."
    return "Consultas marcadas:\n" + "\n".join(
        f"- {a.doctor_name} ({a.specialty}), {spoken_time(a.starts_at)} (appointment_id={a.id})"
        for a in found.appointments
    )


@function_tool
async def reschedule_appointment(
    context: RunContext[Any], appointment_id: str, starts_at: str
) -> str:
    """Remarca uma consulta para outro horário livre do mesmo médico. Como ao agendar: a
    primeira chamada só propõe; chame de novo depois que o paciente confirmar.

    Args:
        appointment_id: o appointment_id vindo de find_appointments.
        starts_at: o starts_at exato do novo horário (ISO com fuso).
    """
    desk = _desk(context)
    moment = parse_time(starts_at)
    if not desk.confirmed("reschedule", appointment_id, moment.isoformat()):
        return (
            f"Ainda não remarcado. Pergunte ao paciente se confirma a mudança para "
            f"{spoken_time(moment)}; se sim, chame reschedule_appointment de novo."
        )
    moved: sched.RescheduleReply = await desk.call(
        sched.RescheduleRequest(
            dispatch_id=desk.consultation.dispatch_id,
            appointment_id=appointment_id,
            starts_at=moment,
            patient_ref=desk.patient_ref(),
        )
    )
    return (
        f"Remarcado de {spoken_time(moved.previous.starts_at)} para "
        f"{spoken_time(moved.appointment.starts_at)} com {moved.appointment.doctor_name}."
    )


@function_tool
async def cancel_appointment(context: RunContext[Any], appointment_id: str) -> str:
    """Cancela uma consulta. A primeira chamada só propõe; chame de novo depois que o paciente
    confirmar que quer cancelar.

    Args:
        appointment_id: o appointment_id vindo de find_appointments.
    """
    desk = _desk(context)
    if not desk.confirmed("cancel", appointment_id):
        return (
            "Ainda não cancelado. Pergunte ao paciente se confirma o cancelamento; se sim, "
            "chame cancel_appointment de novo."
        )
    cancelled: sched.AppointmentReply = await desk.call(
        sched.CancelRequest(
            dispatch_id=desk.consultation.dispatch_id,
            appointment_id=appointment_id,
            patient_ref=desk.patient_ref(),
        )
    )
    a = cancelled.appointment
    return f"Cancelada a consulta com {a.doctor_name} em {spoken_time(a.starts_at)}."
