"""The anamnesis record, pure: the intake questionnaire, answers as FHIR values, the FHIR R4
QuestionnaireResponse, its transcript references and the pt-BR summary for the doctor."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from services.agent.roles import ROLES_DIR
from shared.events.clinical import TranscriptRef

QUESTIONNAIRE_PATH = ROLES_DIR / "intake" / "questionnaire.json"
# The identifier system of a patient named by the clinic's own pseudonymous reference.
PATIENT_REF_SYSTEM = "urn:mediai:patient-ref"
MAX_TEXT = 2000
# Bounds of integer answers the questionnaire states in words ("de 0 ... a 10").
RANGES = {"hda.intensidade": (0, 10)}
# Short labels for the summary (the questionnaire's texts are questions).
LABELS = {
    "identificacao.nome": "Nome",
    "identificacao.data-nascimento": "Nascimento",
    "identificacao.sexo": "Sexo",
    "identificacao.ocupacao": "Ocupação",
    "queixa-principal.descricao": "Queixa",
    "hda.inicio": "Início",
    "hda.duracao": "Duração",
    "hda.localizacao": "Local",
    "hda.caracteristicas": "Características",
    "hda.intensidade": "Intensidade (0-10)",
    "hda.fatores-piora": "Piora com",
    "hda.fatores-melhora": "Melhora com",
    "hda.sintomas-associados": "Sintomas associados",
    "hda.tratamentos": "Já tentou",
    "antecedentes.doencas": "Doenças",
    "antecedentes.cirurgias": "Cirurgias/internações",
    "antecedentes.gestacao": "Gestação",
    "medicamentos.em-uso": "Usa medicamentos",
    "medicamentos.lista": "Quais",
    "alergias.possui": "Tem alergias",
    "alergias.lista": "A quê",
    "sinais-alerta.presentes": "Sinal de alerta",
    "sinais-alerta.descricao": "Qual",
}
YES = {"sim", "s", "yes", "true", "verdadeiro", "tem", "possui", "uso", "usa"}
NO = {"nao", "n", "no", "false", "falso", "nenhum", "nenhuma", "nada"}


class AnswerError(ValueError):
    """An answer does not fit its item; the message (pt-BR) tells the model how to fix it."""


@dataclass(frozen=True)
class Item:
    link_id: str
    text: str
    type: str
    group: str
    options: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True)
class Questionnaire:
    url: str
    version: str
    groups: tuple[tuple[str, str], ...]  # (linkId, text), in order
    items: dict[str, Item]  # answerable items by linkId, in order

    def in_group(self, group: str) -> list[Item]:
        return [item for item in self.items.values() if item.group == group]


def load_questionnaire(path: Path = QUESTIONNAIRE_PATH) -> Questionnaire:
    document = json.loads(path.read_text())
    groups: list[tuple[str, str]] = []
    items: dict[str, Item] = {}
    for group in document["item"]:
        groups.append((group["linkId"], group["text"]))
        for child in group.get("item", []):
            options = tuple(o["valueCoding"] for o in child.get("answerOption", []))
            items[child["linkId"]] = Item(
                child["linkId"], child["text"], child["type"], group["linkId"], options
            )
    return Questionnaire(document["url"], document.get("version", ""), tuple(groups), items)


def fold(text: str) -> str:
    """Lowercase without accents or punctuation at the ends, for matching spoken answers."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"\s+", " ", plain.lower()).strip(" .!?,;:")


def to_fhir_value(item: Item, answer: str) -> dict[str, Any]:
    """The ``QuestionnaireResponse.item.answer`` for a spoken answer; AnswerError if it does not
    fit the item's type."""
    text = answer.strip()
    if not text:
        raise AnswerError("A resposta está vazia: registre o que o paciente disse.")
    if item.type in ("string", "text"):
        if len(text) > MAX_TEXT:
            raise AnswerError(f"Resposta longa demais: resuma em até {MAX_TEXT} caracteres.")
        return {"valueString": text}
    if item.type == "integer":
        match = re.fullmatch(r"[^\d-]*(-?\d+)[^\d]*", text)
        if not match:
            raise AnswerError(f"'{item.text}' pede um número inteiro (por exemplo 7).")
        number = int(match.group(1))
        low, high = RANGES.get(item.link_id, (-(10**6), 10**6))
        if not low <= number <= high:
            raise AnswerError(f"'{item.text}' vai de {low} a {high}; confirme com o paciente.")
        return {"valueInteger": number}
    if item.type == "boolean":
        word = fold(text)
        if word in YES:
            return {"valueBoolean": True}
        if word in NO:
            return {"valueBoolean": False}
        raise AnswerError(f"'{item.text}' pede sim ou não.")
    if item.type == "date":
        return {"valueDate": _date(text, item)}
    if item.type == "choice":
        wanted = fold(text)
        for option in item.options:
            if wanted in (fold(option["code"]), fold(option.get("display", ""))):
                return {"valueCoding": dict(option)}
        valid = "; ".join(f"{o['code']} ({o.get('display', '')})" for o in item.options)
        raise AnswerError(f"'{item.text}' aceita só uma destas opções: {valid}.")
    raise AnswerError(f"O item '{item.link_id}' não recebe respostas.")


def _date(text: str, item: Item) -> str:
    for pattern in (r"(\d{4})-(\d{2})-(\d{2})", r"(\d{1,2})/(\d{1,2})/(\d{4})"):
        match = re.fullmatch(pattern, text)
        if match:
            parts = [int(p) for p in match.groups()]
            year, month, day = parts if pattern.startswith(r"(\d{4})") else parts[::-1]
            try:
                return date(year, month, day).isoformat()
            except ValueError:
                break
    raise AnswerError(f"'{item.text}' pede uma data como 1980-05-31 (ano-mês-dia).")


@dataclass(frozen=True)
class Answer:
    link_id: str
    value: dict[str, Any]
    spoken: str
    segment_ids: tuple[str, ...] = ()


@dataclass
class AnswerBook:
    """The answers recorded so far; recording an item again replaces it (a correction)."""

    questionnaire: Questionnaire
    answers: dict[str, Answer] = field(default_factory=dict)

    def record(self, link_id: str, spoken: str, segment_ids: list[str]) -> Answer:
        item = self.questionnaire.items.get(link_id)
        if item is None:
            raise AnswerError(
                f"'{link_id}' não é um item do questionário; use um dos linkId "
                "listados na ferramenta."
            )
        answer = Answer(link_id, to_fhir_value(item, spoken), spoken.strip(), tuple(segment_ids))
        self.answers[link_id] = answer
        return answer

    def ordered(self) -> list[Answer]:
        return [self.answers[k] for k in self.questionnaire.items if k in self.answers]


def questionnaire_response(
    book: AnswerBook, *, status: str, authored: datetime, dispatch_id: str, patient_ref: str = ""
) -> dict[str, Any]:
    """The FHIR R4 QuestionnaireResponse of the answers, grouped as the questionnaire is; its
    ``subject`` is the patient by the clinic's own reference, when the dispatch named one."""
    q = book.questionnaire
    groups = []
    for link_id, text in q.groups:
        answered = [
            {"linkId": i.link_id, "text": i.text, "answer": [book.answers[i.link_id].value]}
            for i in q.in_group(link_id)
            if i.link_id in book.answers
        ]
        if answered:
            groups.append({"linkId": link_id, "text": text, "item": answered})
    canonical = f"{q.url}|{q.version}" if q.version else q.url
    response: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "language": "pt-BR",
        "identifier": {"system": "urn:mediai:dispatch", "value": dispatch_id},
        "questionnaire": canonical,
        "status": status,
        "authored": authored.isoformat(),
    }
    if patient_ref:
        response["subject"] = {"identifier": {"system": PATIENT_REF_SYSTEM, "value": patient_ref}}
    if groups:
        response["item"] = groups
    return response


def transcript_refs(book: AnswerBook) -> list[TranscriptRef]:
    return [
        TranscriptRef(link_id=a.link_id, segment_ids=list(a.segment_ids))
        for a in book.ordered()
        if a.segment_ids
    ]


def display(value: dict[str, Any]) -> str:
    if "valueBoolean" in value:
        return "sim" if value["valueBoolean"] else "não"
    if "valueCoding" in value:
        return str(value["valueCoding"].get("display") or value["valueCoding"]["code"])
    return str(next(iter(value.values())))


def summary_pt_br(book: AnswerBook) -> str:
    """A short summary for the doctor, made only from the recorded answers (so it says nothing
    the patient did not say), red flags first."""
    q = book.questionnaire
    lines = [
        "Anamnese colhida pela assistente virtual antes da consulta (relato do paciente, "
        "sem diagnóstico)."
    ]
    order = sorted(q.groups, key=lambda g: g[0] != "sinais-alerta")
    for link_id, text in order:
        answers = [
            book.answers[i.link_id] for i in q.in_group(link_id) if i.link_id in book.answers
        ]
        if not answers:
            continue
        title = "ATENÇÃO, sinal de alerta" if link_id == "sinais-alerta" else text.split(" (")[0]
        parts = [
            f"{LABELS.get(a.link_id, q.items[a.link_id].text)}: {display(a.value)}" for a in answers
        ]
        lines.append(f"{title}: " + "; ".join(parts) + ".")
    if len(lines) == 1:
        lines.append("Nenhuma resposta foi registrada.")
    return "\n".join(lines)
