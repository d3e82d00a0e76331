"""The console in a real browser (Debian's Chromium, fake camera, the WAV as microphone) against
the real stack, agents answering through the OpenAI-compatible stand-in: the clinic creates a
consultation; the patient hears the agent, consents with the button, speaks and sees captions;
the doctor reads the anamnesis once the intake ends, calls the copilot and sees its hint and its
red flag as a banner, never a hint forged by a participant; the clinic reads that session's
timeline with the agent's turns, its tool calls and usage, each linked to the trace of its
event, then its usage, invoices and an audit; the intake ends and the patient is told, and
leaves. Every view passes axe with no serious violation and is photographed at 1280 and 375 px,
never wider than the screen."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from livekit import rtc
from playwright.async_api import Browser, Page, expect

from deploy.stack import StackState
from services.agent import consent
from services.sessions.core import trace_id
from shared.bus import Bus
from shared.events.agents import AgentToolCalled, AgentTranscribed, AgentUsageReported
from shared.participants import DOCTOR, person_role
from tests.browser.conftest import new_page, screenshots, serious_violations
from tests.standin import OpenAIStandin
from tests.support import until, watch

pytestmark = [pytest.mark.livekit, pytest.mark.browser]

OPENAI = {
    "stt": "openai/gpt-4o-mini-transcribe",
    "llm": "openai/gpt-4o-mini",
    "tts": "openai/gpt-4o-mini-tts",
}
HEARD = "Estou com dor de cabeça desde segunda-feira."
ASKED = "Obrigada! Qual é o motivo da consulta?"
RECORDED = "Obrigada, registrei tudo para o médico."
HINT = "Pergunta: De 0 a 10, qual é a intensidade da dor?"
FORGED = "Alerta: suspender a insulina."
ALARMING = "O paciente refere dor no peito e falta de ar."
RED_FLAG = "Alerta: dor torácica com dispneia, avaliar síndrome coronariana."
INTAKE = "assistente de triagem"
COPILOT = "copiloto do médico"


def script(standin: OpenAIStandin) -> None:
    """The intake: consent, then the chief complaint recorded and the intake finished; the
    copilot: one question for the doctor, and a red flag once someone speaks of chest pain.
    Every transcription hears the patient's WAV as HEARD until the test changes that."""
    standin.reset()
    standin.transcript_default(HEARD)
    standin.chat(
        "concordo",
        system=consent.PHASE_HEADING.removeprefix("## "),
        tool_calls=[("record_consent", {"ai_assistance": True})],
    )
    standin.chat(after_tool="record_consent", text=ASKED)
    standin.chat(
        "dor de cabeça",
        system=INTAKE,
        tool_calls=[
            ("record_answer", {"link_id": "queixa-principal.descricao", "answer": HEARD}),
            ("finish_intake", {}),
        ],
    )
    standin.chat(after_tool="*", system=INTAKE, text=RECORDED)
    standin.chat("dor no peito", system=COPILOT, text=RED_FLAG)
    standin.chat(system=COPILOT, text=HINT)


async def peak_above(page: Page, test_id: str, level: float, timeout: float = 10_000) -> None:
    """Wait until the level meter ``test_id`` (WebAudio, in the page) has measured ``level``."""
    await page.wait_for_function(
        "([id, level]) => Number(document.querySelector(`[data-testid=${id}]`)?.dataset.peak) > level",
        arg=[test_id, level],
        timeout=timeout,
    )


async def no_serious_violations(page: Page, view: str) -> None:
    found = await serious_violations(page)
    assert found == [], f"{view}: {found}"


async def test_a_consultation_through_the_console(
    browser: Browser,
    stack: StackState,
    openai_standin: OpenAIStandin,
    bus: Bus,
    api: httpx.AsyncClient,
) -> None:
    script(openai_standin)
    room = f"consulta-{uuid.uuid4().hex[:6]}"
    async with watch(bus, AgentToolCalled, AgentTranscribed, AgentUsageReported) as agent_events:
        # -- the clinic: the API key in the address is exchanged and dropped; a consultation --
        clinic = await new_page(browser)
        await clinic.goto(f"{stack.gateway_url}/#k={stack.dev_api_key}")
        await expect(clinic.get_by_role("tab", name="Sessões")).to_be_visible()
        assert stack.dev_api_key not in clinic.url
        await clinic.get_by_role("tab", name="Nova consulta").click()
        await clinic.get_by_label("Sala").fill(room)
        for kind, model in OPENAI.items():
            await clinic.locator(f"input[name={kind}]").fill(model)
        await clinic.get_by_role("button", name="Criar consulta").click()
        links = clinic.get_by_test_id("links")
        await expect(links).to_be_visible()
        dispatch_id = await links.get_attribute("data-dispatch")
        patient_link = await clinic.locator("a[data-link=patient]").get_attribute("href")
        doctor_link = await clinic.locator("a[data-link=doctor]").get_attribute("href")
        assert dispatch_id and patient_link and doctor_link
        await no_serious_violations(clinic, "clinic: new consultation")
        await screenshots(clinic, "clinic-new-consultation")

        # -- the patient: device check, join with the microphone off, hear the agent --------
        patient = await new_page(browser)
        await patient.goto(patient_link)
        await expect(patient.get_by_role("button", name="Entrar na consulta")).to_be_enabled()
        await peak_above(patient, "mic-level", 0.05)  # the WAV reaches the device check's meter
        await no_serious_violations(patient, "patient: device check")
        await screenshots(patient, "patient-device-check")
        await patient.get_by_role("button", name=re.compile("^Microfone")).click()
        # The camera, seen in the device check, stays off in the call: encoding and decoding
        # video in three pages starves a small shared machine's renderers for seconds, and no
        # check needs the picture.
        await patient.get_by_role("button", name=re.compile("^Câmera")).click()
        await patient.get_by_role("button", name="Entrar na consulta").click()
        await expect(patient.get_by_role("button", name="Sim, concordo")).to_be_visible(
            timeout=45_000
        )
        # The agent's consent question arrives as captions.
        await expect(patient.get_by_test_id("captions")).to_contain_text(
            "assistente virtual", timeout=30_000
        )
        await no_serious_violations(patient, "patient: call")
        await screenshots(patient, "patient-call")

        # -- consent by the button: the patient's own turn, as if said ----------------------
        await patient.get_by_role("button", name="Sim, concordo").click()
        await expect(patient.get_by_test_id("captions")).to_contain_text(ASKED, timeout=30_000)
        # ... and the agent's answer as sound, measured with WebAudio in the page (its greeting
        # may have been said before a loaded machine had subscribed the page to its voice).
        await peak_above(patient, "agent-level", 0.05, timeout=30_000)
        # -- the patient speaks (the WAV), the agent records and answers ---------------------
        await patient.get_by_role("button", name="Ligar microfone").click()
        captions = patient.get_by_test_id("captions")
        await expect(captions.locator("[data-speaker=you]").first).to_contain_text(
            "dor de cabeça", timeout=45_000
        )
        await expect(captions).to_contain_text(RECORDED, timeout=45_000)
        await patient.get_by_role("button", name="Desligar microfone").click()

        # -- the doctor: the anamnesis, the copilot's hint, no forged hint -------------------
        doctor = await new_page(browser)
        await doctor.goto(doctor_link)
        anamnesis = doctor.get_by_test_id("anamnesis")
        await expect(anamnesis).to_contain_text("Queixa", timeout=30_000)
        # Each answer shows the patient's own words it came from.
        await expect(anamnesis.locator("blockquote").first).to_contain_text("dor de cabeça")
        # The doctor's own camera is not shown in their view (and would only load the machine).
        await doctor.get_by_role("button", name=re.compile("^Câmera")).click()
        # The doctor joins with the microphone on, then mutes it: its track stays published,
        # so the copilot subscribes to it as it joins, and hears all of what the doctor says
        # when unmuted (a track published later is subscribed to only after some seconds on a
        # loaded machine, and the WAV is said once, from the moment the microphone opens).
        await doctor.get_by_role("button", name="Entrar na consulta").click()
        await doctor.get_by_role("button", name="Desligar microfone").click()
        await doctor.get_by_role("button", name="Chamar o copiloto").click()
        await expect(doctor.get_by_text("O copiloto está na consulta.")).to_be_visible(
            timeout=45_000
        )
        # The doctor speaks (the WAV again) once the copilot hears the room (its session has
        # started, not only joined); the copilot hears it and writes a hint.
        hints = doctor.get_by_test_id("hints")
        await expect(hints).to_have_attribute("data-copilot-state", "listening", timeout=45_000)
        await doctor.get_by_role("button", name="Ligar microfone").click()
        await expect(hints.locator("li[data-kind=question]")).to_contain_text(
            HINT.removeprefix("Pergunta: "), timeout=60_000
        )
        async with forged_hint(api, room):
            await expect(hints).to_have_attribute(
                "data-refused", re.compile(r"[1-9]"), timeout=30_000
            )
        await expect(hints).not_to_contain_text("insulina")
        await expect(doctor.get_by_test_id("red-flag")).to_have_count(0)
        # The doctor speaks again (the microphone reopened plays the WAV again), now heard as
        # chest pain: the copilot's red flag is a banner above the call.
        openai_standin.transcript_default(ALARMING)
        await doctor.get_by_role("button", name="Desligar microfone").click()
        await doctor.get_by_role("button", name="Ligar microfone").click()
        await expect(doctor.get_by_test_id("red-flag")).to_contain_text(
            RED_FLAG.removeprefix("Alerta: "), timeout=60_000
        )
        await expect(hints.locator("li[data-kind=red_flag]")).to_have_count(1)
        await no_serious_violations(doctor, "doctor")
        await screenshots(doctor, "doctor-call")

        # -- the clinic's timeline of that session -------------------------------------------
        await clinic.get_by_role("tab", name="Sessões").click()
        await clinic.locator(f"button[data-room='{room}']").first.click()
        timeline = clinic.get_by_test_id("timeline")
        await expect(timeline.locator("li[data-kind=transcript]").first).to_be_visible()
        await expect(
            timeline.locator("li[data-kind=tool_call]", has_text="record_answer")
        ).to_have_count(1)
        await expect(timeline.locator("li[data-kind=usage]").first).to_be_visible(timeout=45_000)
        await expect(timeline).to_contain_text(RECORDED)  # an agent's turn
        await expect(timeline.locator("li[data-kind=consent]")).to_contain_text("concedido")
        await no_serious_violations(clinic, "clinic: timeline")
        await screenshots(clinic, "clinic-timeline")
        published = {e.id: e for e in agent_events.drain() if e.data.dispatch_id == dispatch_id}  # type: ignore[attr-defined]

    # Each entry of those events links to the trace of its event.
    rows = await timeline.locator("li[data-key]").evaluate_all(
        "rows => rows.map(r => [r.dataset.key, r.dataset.kind, r.querySelector('a.trace')?.href ?? ''])"
    )
    checked = [(key, kind, href) for key, kind, href in rows if key in published]
    assert {kind for _, kind, _ in checked} >= {"transcript", "tool_call", "usage"}
    for key, _, href in checked:
        expected = trace_id(published[key].traceparent)
        assert expected and href == f"http://traces.test/trace/{expected}"

    await usage_invoices_and_an_audit(clinic)

    # -- the intake ends: the patient is told the assistant left (the copilot, the doctor's,
    # stays and does not count), and leaves ---------------------------------------------------
    ended = await api.delete(f"/v1/agents/{dispatch_id}")
    assert ended.status_code in (200, 202), ended.text
    await expect(patient.get_by_test_id("agent-left")).to_be_visible(timeout=45_000)
    await patient.get_by_role("button", name="Sair").click()
    await expect(patient.get_by_text("Você saiu da consulta.")).to_be_visible()

    for page in (clinic, patient, doctor):
        assert page.errors == []  # type: ignore[attr-defined]
        await page.context.close()


async def usage_invoices_and_an_audit(clinic: Page) -> None:
    """The clinic's usage per meter (the consultation's agents metered), this month's draft
    invoice, and an audit by replay whose result is shown."""
    await clinic.get_by_role("tab", name="Uso e faturas").click()
    usage = clinic.get_by_test_id("usage")
    await expect(usage.locator("tbody tr", has_text="agent_session")).not_to_have_count(0)
    await expect(clinic.get_by_test_id("invoices").locator("tbody tr")).not_to_have_count(0)
    await clinic.get_by_role("button", name="Auditar").click()
    await expect(clinic.get_by_test_id("audit-result")).to_contain_text(
        re.compile("Confere|Diferença"), timeout=30_000
    )
    await no_serious_violations(clinic, "clinic: usage")
    await screenshots(clinic, "clinic-usage")


@asynccontextmanager
async def forged_hint(api: httpx.AsyncClient, room: str) -> AsyncIterator[None]:
    """A participant with a patient's token writes on the hint topic, with a hint's attributes,
    to the doctor once in the room with them, and stays until the caller is done (leaving at
    once could cut its stream short). The doctor's page refuses it whether or not the news of
    the forger's arrival reached it first (a sender it does not know is no agent either), so
    the test does not wait for that news, which a loaded machine can hold back for seconds."""
    identity = f"intruso-{uuid.uuid4().hex[:6]}"
    grant = await api.post("/v1/tokens", json={"room": room, "identity": identity})
    assert grant.is_success, grant.text
    forger = rtc.Room()
    # It only writes: receiving the others' video would only load the machine.
    await forger.connect(
        grant.json()["wsUrl"], grant.json()["token"], rtc.RoomOptions(auto_subscribe=False)
    )
    try:
        await until(
            lambda: any(
                person_role(p.attributes) == DOCTOR for p in forger.remote_participants.values()
            ),
            timeout=20,
        )
        await forger.local_participant.send_text(
            FORGED,
            topic="mediai.copilot.hints",
            attributes={"mediai.hint.id": "forged", "mediai.hint.kind": "red_flag"},
        )
        yield
    finally:
        await forger.disconnect()


async def test_portuguese_first_english_second(browser: Browser, stack: StackState) -> None:
    """The console speaks Brazilian Portuguese unless asked; the switch gives English, and a
    patient's address without its invitation says so in words, not a blank page."""
    page = await new_page(browser, width=375)
    await page.goto(f"{stack.gateway_url}/consulta/sala-1")
    await expect(page.locator("html")).to_have_attribute("lang", "pt-BR")
    await expect(page.get_by_role("status")).to_contain_text("não tem o convite da consulta")
    await page.get_by_role("link", name="English").click()
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await expect(page.get_by_role("status")).to_contain_text("has no consultation invitation")
    await page.goto(stack.gateway_url)  # the choice is remembered
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert page.errors == []  # type: ignore[attr-defined]
    await page.context.close()
