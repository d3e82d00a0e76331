"""Names are whole-string matches, with the same meaning in Python (msgspec, the services) and
in JavaScript (clients generated from the OpenAPI documents); and every name field of the API,
given a name with a trailing newline, answers with its documented 400."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Annotated, Any

import httpx
import msgspec
import pytest

from services.scheduling.core import CLOCK
from shared import naming

PATTERNS = {
    "ROOM_NAME": naming.ROOM_NAME.pattern,
    "IDENTITY": naming.IDENTITY.pattern,
    "PATIENT_REF": naming.PATIENT_REF.pattern,
    "TENANT_ID": naming.TENANT_ID.pattern,
    "FILE_NAME": naming.FILE_NAME.pattern,
    "LANGUAGE": naming.LANGUAGE.pattern,
    "CLOCK": CLOCK.pattern,
}
VALID = {
    "ROOM_NAME": "consulta-1",
    "IDENTITY": "doctor-1@clinic:2",
    "PATIENT_REF": "pac-123_45",
    "TENANT_ID": "tabc123def4",
    "FILE_NAME": "gravacao_1",
    "LANGUAGE": "pt-BR",
    "CLOCK": "08:30",
}


def variants(name: str) -> list[str]:
    """A valid name and the ways it can be bent into one that only looks the same."""
    return [
        name,
        f"{name}\n",
        f"{name}\r\n",
        f"\n{name}",
        f"{name}\n\n",
        f"{name[:1]}\n{name[1:]}",
        f"{name} ",
        f"{name[:-1]}\u0660",  # the same, its last character swapped for that digit
        f"{name}\u0660",  # an Arabic-Indic digit: \d in Python, not in JavaScript
        "",
    ]


def python_accepts(pattern: str, text: str) -> bool:
    """What msgspec does with ``Meta(pattern=…)``: an unanchored search."""
    by_search = re.search(pattern, text) is not None
    by_msgspec = True
    try:
        msgspec.convert(text, Annotated[str, msgspec.Meta(pattern=pattern)])
    except msgspec.ValidationError:
        by_msgspec = False
    assert by_search == by_msgspec
    return by_search


def javascript_accepts(cases: list[tuple[str, str]], flags: str) -> list[bool]:
    """``new RegExp(pattern, flags).test(text)`` for each case, run by Node."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: cannot compare with JavaScript's RegExp")
    script = (
        "const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        f"process.stdout.write(JSON.stringify(cases.map(([p, t]) => new RegExp(p, {flags!r})"
        ".test(t))));"
    )
    done = subprocess.run(
        [node, "-e", script], input=json.dumps(cases), capture_output=True, text=True, check=True
    )
    answers: list[bool] = json.loads(done.stdout)
    return answers


@pytest.mark.parametrize("flags", ["", "u"])  # "u": what JSON Schema validators (ajv) use
def test_every_pattern_means_the_same_in_python_and_javascript(flags: str) -> None:
    cases = [(PATTERNS[key], text) for key in PATTERNS for text in variants(VALID[key])]
    python = [python_accepts(pattern, text) for pattern, text in cases]
    assert javascript_accepts(cases, flags) == python
    # And what they both say is right: only the valid name itself passes.
    assert python == [text == VALID[key] for key in PATTERNS for text in variants(VALID[key])]


def test_a_trailing_newline_is_not_a_name() -> None:
    assert naming.is_room_name("consulta-1")
    assert not naming.is_room_name("consulta-1\n")
    assert not naming.is_identity("doctor-1\n")
    assert naming.split_livekit_room("tabc123def4~consulta-1\n") is None
    assert naming.tenant_room("tabc123def4~consulta-1\n") == (
        naming.SYSTEM_TENANT,
        "tabc123def4~consulta-1\n",
    )


# -- through the gateway ---------------------------------------------------------------------

NL = "\n"
# (method, path, query, body, where the name is, the 400's code). A name in a body or a query
# is checked by the request's schema (``invalid_request``, the field in ``details``); a name in
# a path gets the same 400 (rooms: its own ``invalid_room_name``/``invalid_identity``), never a
# 404: a name that can be no resource's is the caller's mistake, and saying so tells it apart
# from a resource that does not exist yet.
NAME_FIELDS: dict[str, tuple[str, str, dict[str, str], dict[str, Any] | None, str, str]] = {
    "token room": (
        "POST", "/v1/tokens", {}, {"room": f"c-1{NL}", "identity": "p-1"}, "room", "invalid_request"
    ),
    "token identity": (
        "POST", "/v1/tokens", {}, {"room": "c-1", "identity": f"p-1{NL}"}, "identity",
        "invalid_request",
    ),
    "token role": (
        "POST", "/v1/tokens", {}, {"room": "c-1", "identity": "p-1", "role": f"doctor{NL}"},
        "role", "invalid_role",
    ),
    "room create name": ("POST", "/v1/rooms", {}, {"name": f"c-1{NL}"}, "name", "invalid_request"),
    "room path": ("GET", "/v1/rooms/c-1%0A", {}, None, "", "invalid_room_name"),
    "participant path": (
        "GET", "/v1/rooms/c-1/participants/p-1%0A", {}, None, "", "invalid_identity"
    ),
    "data destination": (
        "POST", "/v1/rooms/c-1/data", {}, {"data": "oi", "destinationIdentities": [f"p-1{NL}"]},
        "destinationIdentities", "invalid_request",
    ),
    "egress room": (
        "POST", "/v1/egress/start", {}, {"room": f"c-1{NL}"}, "room", "invalid_request"
    ),
    "egress filename": (
        "POST", "/v1/egress/start", {}, {"room": "c-1", "filename": f"f-1{NL}"}, "filename",
        "invalid_request",
    ),
    "egress list room": ("GET", "/v1/egress", {"room": f"c-1{NL}"}, None, "room", "invalid_request"),
    "ingress room": (
        "POST", "/v1/ingress", {},
        {"room": f"c-1{NL}", "inputType": "whip", "participantIdentity": "cam-1"},
        "room", "invalid_request",
    ),
    "ingress identity": (
        "POST", "/v1/ingress", {},
        {"room": "c-1", "inputType": "whip", "participantIdentity": f"cam-1{NL}"},
        "participantIdentity", "invalid_request",
    ),
    "ingress list room": (
        "GET", "/v1/ingress", {"room": f"c-1{NL}"}, None, "room", "invalid_request"
    ),
    "dispatch room": ("POST", "/v1/agents", {}, {"room": f"c-1{NL}"}, "room", "invalid_request"),
    "dispatch participant": (
        "POST", "/v1/agents", {}, {"room": "c-1", "participant": f"p-1{NL}"}, "participant",
        "invalid_request",
    ),
    "dispatch language": (
        "POST", "/v1/agents", {}, {"room": "c-1", "language": f"pt-BR{NL}"}, "language",
        "invalid_request",
    ),
    "dispatch list room": ("GET", "/v1/agents", {"room": f"c-1{NL}"}, None, "room", "invalid_request"),
    "appointment patientRef": (
        "POST", "/v1/appointments", {},
        {"doctorId": "d-1", "startsAt": "2030-01-07T09:00:00-03:00", "patientRef": f"p-1{NL}"},
        "patientRef", "invalid_request",
    ),
    "appointment room": (
        "POST", "/v1/appointments", {},
        {
            "doctorId": "d-1",
            "startsAt": "2030-01-07T09:00:00-03:00",
            "patientRef": "p-1",
            "room": f"c-1{NL}",
        },
        "room", "invalid_request",
    ),
    "appointment list patientRef": (
        "GET", "/v1/appointments", {"patientRef": f"p-1{NL}"}, None, "patientRef",
        "invalid_request",
    ),
    "token patientRef": (
        "POST", "/v1/tokens", {}, {"room": "c-1", "identity": "p-1", "patientRef": f"p-1{NL}"},
        "patientRef", "invalid_request",
    ),
    "dispatch patientRef": (
        "POST", "/v1/agents", {}, {"room": "c-1", "patientRef": f"p-1{NL}"}, "patientRef",
        "invalid_request",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", NAME_FIELDS, ids=list(NAME_FIELDS))
async def test_every_name_field_rejects_a_trailing_newline(
    api: httpx.AsyncClient, case: str
) -> None:
    method, path, query, body, field, code = NAME_FIELDS[case]
    response = await api.request(method, path, params=query, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == code
    # The field as the client sends it: in the details of a schema check, or the message of a
    # path check.
    named = [str(d.get("field")).split("[")[0] for d in error.get("details") or []]
    assert field in named or field in error["message"], error
