"""``patientRef`` at every door (tokens, dispatches, appointments): a pseudonymous id, refused
with the documented 400 body when it has spaces, a trailing newline, a contact's characters, or
is too long; and an appointment's dispatch must name its patient."""

from __future__ import annotations

import re

import httpx
import pytest

from shared.naming import PATIENT_REF

BAD = ["pac 000123", "pac-000123\n", "p" * 65, "maria@clinica.com.br", "123.456.789-09", ""]


def test_the_pattern_means_the_same_in_python_and_javascript() -> None:
    # JavaScript has no \\Z; the pattern's own end works in both (no inline flags, no \\Z).
    assert PATIENT_REF.pattern.endswith("(?!\\n)$") and "\\Z" not in PATIENT_REF.pattern
    for bad in BAD:
        assert not re.search(PATIENT_REF.pattern, bad), bad
    assert re.search(PATIENT_REF.pattern, "pac-000123")


def documented(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == "invalid_request"
    return dict(error)


@pytest.mark.parametrize("bad", BAD)
async def test_a_bad_patient_ref_is_a_400_with_the_documented_body(
    api: httpx.AsyncClient, bad: str
) -> None:
    token = await api.post(
        "/v1/tokens", json={"room": "consult-9", "identity": "p9", "patientRef": bad}
    )
    assert "patientRef" in str(documented(token)["details"])
    agent = await api.post(
        "/v1/agents", json={"room": "consult-9", "role": "intake", "patientRef": bad}
    )
    assert "patientRef" in str(documented(agent)["details"])
    appointment = await api.post(
        "/v1/appointments",
        json={"doctorId": "d1", "startsAt": "2030-03-04T09:00:00-03:00", "patientRef": bad},
    )
    assert "patientRef" in str(documented(appointment)["details"])
    listing = await api.get("/v1/appointments", params={"patientRef": bad})
    assert "patientRef" in str(documented(listing)["details"])


async def test_a_dispatch_for_an_appointment_must_name_its_patient(
    api: httpx.AsyncClient,
) -> None:
    response = await api.post(
        "/v1/agents", json={"room": "consult-9", "role": "intake", "appointmentId": "appt-1"}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "patient_ref_required"
    assert error["details"] == [{"field": "patientRef", "requiredWith": "appointmentId"}]
